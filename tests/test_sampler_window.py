"""The polling window (--duration): readings that cannot be the table's (a corrupt or
absurd count, counters that went back) have no value, so they never make a negative rate
or a fake peak, and the window says how many were discarded and why."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from conftest import run_cli, tree_args
from test_namespaces import stat_text

from ct_tune import facts, sampler, snapshot

MAX = 262144  # the defaults-16g tree's nf_conntrack_max


def poll_through(roots: facts.Roots, steps: list[Callable[[], None]]) -> dict:
    """sampler.poll over the captured tree, each step rewriting its files after one poll:
    progress is called from the second poll on, so polls 0 and 1 read the files as set
    up, step k sets what poll k + 2 reads, and the last one stays."""
    todo = list(steps)

    def between(_elapsed: float, _duration: float, _count: int | None) -> None:
        if todo:
            todo.pop(0)()

    window = sampler.poll(roots, duration=1.5, interval=0.05, progress=between)
    assert not todo, "the window ended before every step was polled"
    return window


def writer(path, text: str) -> Callable[[], None]:
    return lambda: path.write_text(text)


def test_a_corrupt_or_absurd_count_is_no_poll_and_no_peak(tree):
    roots = tree("defaults-16g")
    count = roots.procfs / "sys/net/netfilter/nf_conntrack_count"
    count.write_text("1000\n")
    window = poll_through(roots, [writer(count, f"{v}\n") for v in (
        "1100", "-5", str(2**40), str(17 * MAX), "12x4", "1200")])
    # only real counts: none of the bad readings is the peak or in the series
    assert window["peak"] == 1200
    assert {c for _, c in window["series"]} == {1000, 1100, 1200}
    assert window["growth"] == 200
    assert window["discarded"]["count"] == 4
    assert window["discarded"]["counters"] == 0
    problems = window["discarded"]["problems"]
    assert len(problems) == 4 and all(p.startswith(f"{count}: ") for p in problems)
    assert any("negative" in p for p in problems)
    assert any("2^32" in p for p in problems)
    assert any(f"more than 16x nf_conntrack_max ({MAX})" in p for p in problems)


def test_a_count_over_a_lowered_max_is_real(tree):
    """Lowering max leaves the entries above it: 3x max is a real table, not corrupt."""
    roots = tree("defaults-16g")
    count = roots.procfs / "sys/net/netfilter/nf_conntrack_count"
    mx = roots.procfs / "sys/net/netfilter/nf_conntrack_max"
    window = poll_through(roots, [writer(mx, "65536\n"), writer(count, "200000\n")])
    assert window["peak"] == 200000
    assert window["discarded"]["count"] == 0


def test_counters_that_go_back_make_no_negative_rate(tree):
    """The namespace created again (or a corrupt file) near the end of the window: the
    rates span the readings before it, and the polls after it are discarded."""
    roots = tree("defaults-16g")
    stat = roots.procfs / "net/stat/nf_conntrack"
    stat.write_text(stat_text(1234, 10))
    window = poll_through(roots, [writer(stat, stat_text(1234, 50)),
                                  writer(stat, stat_text(1234, 5))])
    assert window["rates"]["drop_per_s"] > 0
    assert all(v >= 0 for v in window["rates"].values())
    # every poll after the reset: all but 10, 10, 50 (the count file was fine in all)
    assert window["discarded"]["counters"] == window["polls"] - 3 >= 1
    assert window["discarded"]["count"] == 0
    assert window["discarded"]["problems"] == [
        f"{stat}: drop went back (50 -> 5): reset or corrupt"]


def test_one_corrupt_stat_reading_is_skipped_and_the_rate_spans_the_rest(tree):
    roots = tree("defaults-16g")
    stat = roots.procfs / "net/stat/nf_conntrack"
    stat.write_text(stat_text(1234, 10))
    window = poll_through(roots, [writer(stat, stat_text(1234, 20)),
                                  writer(stat, stat_text(1234, 3)),
                                  writer(stat, "entries drop\nzz zz\n"),
                                  writer(stat, stat_text(1234, 40))])
    assert window["discarded"]["counters"] == 2
    # (40 - 10) drops between the first reading and the last (kept: 40 stays): the window
    assert window["rates"]["drop_per_s"] == pytest.approx(30 / window["seconds"], rel=0.02)


def test_the_window_json_says_what_was_discarded_and_loads_back(tree, tmp_path):
    roots = tree("defaults-16g")
    (roots.procfs / "sys/net/netfilter/nf_conntrack_count").write_text(f"{2**40}\n")
    proc = run_cli("collect", *tree_args(roots), "--duration", "0.3",
                   "--interval", "0.1", "-o", str(tmp_path / "snap.json"))
    assert "Traceback" not in proc.stderr
    window = json.loads((tmp_path / "snap.json").read_text())["window"]
    assert window["peak"] is None and window["polls"] == 0
    assert window["discarded"]["count"] >= 2
    assert "poll discarded" in proc.stderr
    assert snapshot.load(str(tmp_path / "snap.json"))["window"] == window
