"""Every table and counter format ct-tune meets, read by both table parsers.

The real captures (tests/fixtures/real-captures/, SOURCES.md says where each comes from)
and the hand-built fixtures (tests/fixtures/formats/, README.md cites the printing code of
each) are read by the full parser (parse_line) and by the aggregating path (scan_line and
scan_block through FlowStats), from a procfs tree and from a conntrack(8) stand-in that
prints the file; the counts are checked against this module's own count of the lines, made
with nothing but str methods and one simple regex.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from conftest import run_cli, tree_args
from hypothesis import given, settings
from hypothesis import strategies as st
from test_flowparse import entries

from ct_tune import ctsource, parsers, sampler
from ct_tune.facts import Roots
from ct_tune.flowparse import NotAnEntry, parse_line
from ct_tune.flows import FlowStats
from ct_tune.formulas import margin95

FIXTURES = Path(__file__).parent / "fixtures"
REAL = FIXTURES / "real-captures"
FORMATS = FIXTURES / "formats"
TABLES = sorted([*REAL.glob("ctl-*.txt"), *REAL.glob("procfs-*.txt"),
                 *FORMATS.glob("ctl-*.txt"), *FORMATS.glob("procfs-*.txt")])
TIMEOUTS = {"nf_conntrack_tcp_timeout_established": 432000, "nf_conntrack_udp_timeout": 30,
            "nf_conntrack_generic_timeout": 600}


# --- the independent count: what a person reading the file would count ------------------

def independent_count(text: str) -> dict:
    """Entries (a line with src= and use=), conntrack(8)'s closing lines, offloaded entries
    and entries per layer 4 protocol, by plain string tests."""
    out = {"entries": 0, "summary": 0, "offloaded": 0, "by_l4": {}}
    for line in text.splitlines():
        if line.startswith("conntrack v") and "(conntrack-tools):" in line:
            out["summary"] += 1
        elif " src=" in line and re.search(r" use=\d+", line):
            words = line.split()
            l4 = words[2] if words[0] in ("ipv4", "ipv6") else words[0]
            out["entries"] += 1
            out["by_l4"][l4] = out["by_l4"].get(l4, 0) + 1
            if "[OFFLOAD]" in line or "[HW_OFFLOAD]" in line:
                out["offloaded"] += 1
    return out


def fake_conntrack(tmp_path: Path, text: str) -> str:
    """A conntrack(8) stand-in on PATH that prints `text` for any command."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (tmp_path / "out.txt").write_text(text)
    exe = bindir / "conntrack"
    exe.write_text(f"#!/bin/sh\ncat '{tmp_path / 'out.txt'}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def by_procfs(tmp_path: Path, text: str) -> FlowStats:
    (tmp_path / "proc" / "net").mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc" / "net" / "nf_conntrack").write_text(text)
    stats = FlowStats(TIMEOUTS)
    with ctsource.table_blocks(Roots(tmp_path / "proc", tmp_path / "sys"), "procfs") as (
            _, blocks):
        stats.feed_blocks(blocks)
    return stats


def by_conntrack_cli(tmp_path: Path, text: str, monkeypatch) -> FlowStats:
    fake_conntrack(tmp_path, text)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "empty").mkdir(exist_ok=True)
    stats = FlowStats(TIMEOUTS)
    with ctsource.table_blocks(Roots(tmp_path / "empty", tmp_path / "sys"), "conntrack") as (
            source, blocks):
        assert "conntrack -L" in source
        stats.feed_blocks(blocks)
    return stats


def by_parse_line(text: str) -> dict:
    out = {"entries": 0, "summary": 0, "offloaded": 0, "by_l4": {}, "malformed": 0}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            flow = parse_line(line)
        except NotAnEntry:
            out["summary"] += 1
            continue
        except ValueError:
            out["malformed"] += 1
            continue
        out["entries"] += 1
        out["by_l4"][flow.l4] = out["by_l4"].get(flow.l4, 0) + 1
        out["offloaded"] += flow.offloaded
    return out


# --- every table file, both parsers, both sources ----------------------------------------

@pytest.mark.parametrize("path", TABLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_table_format_is_read_by_both_parsers(path, tmp_path, monkeypatch):
    text = path.read_text()
    want = independent_count(text)
    assert want["entries"] > 0

    full = by_parse_line(text)
    assert full == {**want, "malformed": 0}

    for stats in (by_procfs(tmp_path, text), by_conntrack_cli(tmp_path, text, monkeypatch)):
        s = stats.summary()
        assert (s["entries_read"], s["malformed"], s["summary_lines"], s["offloaded"]) == (
            want["entries"], 0, want["summary"], want["offloaded"]), s["malformed_examples"]
        assert s["by_l4"] == want["by_l4"]
        # offloaded entries are in no idle histogram: the classes hold exactly the rest
        assert sum(c["entries"] for c in s["classes"].values()) == (
            want["entries"] - want["offloaded"])
    line_by_line = FlowStats(TIMEOUTS)
    line_by_line.feed(text.splitlines(keepends=True))
    assert json.dumps(line_by_line.summary()) == json.dumps(stats.summary())


def test_offloaded_entries_print_no_timeout_and_stay_out_of_the_histograms(tmp_path):
    # nf_conntrack_standalone.c ct_seq_show: no timeout with IPS_OFFLOAD_BIT;
    # tcp_print_conntrack: no state either.
    text = (FORMATS / "procfs-offload.txt").read_text()
    flows = [parse_line(line) for line in text.splitlines()]
    offloaded = [f for f in flows if f.offloaded]
    assert len(offloaded) == 3 and all(f.ttl is None and f.state is None for f in offloaded)
    s = by_procfs(tmp_path, text).summary()
    assert s["offloaded"] == 3
    assert s["by_flag"]["OFFLOAD"] == 2 and s["by_flag"]["HW_OFFLOAD"] == 1
    assert set(s["classes"]) == {"tcp/ESTABLISHED", "udp/unreplied"}
    assert s["classes"]["tcp/ESTABLISHED"]["entries"] == 1


def test_old_gre_ktimestamp_and_fields_after_use_are_fields():
    gre = parse_line((FORMATS / "procfs-gre-old.txt").read_text().splitlines()[0])
    assert (gre.l4, gre.ttl, gre.state) == ("gre", 17999, None)
    assert gre.extra["timeout"] == "600" and gre.extra["stream_timeout"] == "18000"
    assert gre.orig["srckey"] == "0x0" and gre.reply["dstkey"] == "0x0"
    ktime = (FORMATS / "ctl-ktimestamp-zones-helper.txt").read_text().splitlines()
    first = parse_line(ktime[0])
    assert first.extra["start"] == "Sun Nov 29 09:58:01 2026"
    assert first.extra["stop"] == "Sun Nov 29 10:00:04 2026"
    assert first.extra["helper"] == "ftp" and first.extra["zone-orig"] == "5"
    assert parse_line(ktime[2]).zone == 7  # zone= after use=, as old libnetfilter_conntrack
    icmp = parse_line((FORMATS / "ctl-extended-id.txt").read_text().splitlines()[1])
    assert icmp.orig["id"] == icmp.reply["id"] == "4242"  # the ICMP id, in each tuple
    assert icmp.extra["id"] == "1234567"                   # the conntrack id, after use=


# --- conntrack -S and /proc/net/stat/nf_conntrack ----------------------------------------

def independent_cpu_lines(text: str) -> tuple[int, dict]:
    cpus, totals = 0, {}
    for line in text.splitlines():
        if line.startswith("cpu="):
            cpus += 1
            for key, value in re.findall(r"(\w+)=(\d+)", line)[1:]:
                if key != "entries":
                    totals[key] = totals.get(key, 0) + int(value)
    return cpus, totals


@pytest.mark.parametrize("name", ["real-captures/ctS-conntrack-tools-9aecd75.txt",
                                  "real-captures/ctS-imroc-kubernetes-guide.txt",
                                  "formats/ctS-procfs-per-cpu.txt"])
def test_conntrack_S_per_cpu_forms(name, tmp_path):
    text = (FIXTURES / name).read_text()
    cpus, totals = independent_cpu_lines(text)
    got = ctsource.conntrack_stats(fake_conntrack(tmp_path, text))
    assert got["cpus"] == cpus and got["counters"] == totals and not got["first_cpu_only"]
    if "entries=" in text:  # the count, repeated per CPU: not summed
        assert got["entries"] == int(re.search(r"entries=(\d+)", text).group(1))


def test_conntrack_S_one_counter_per_line(tmp_path):
    # conntrack-tools display_proc_conntrack_stats, first form: "%-10s\t\t%-8u\n" of CPU 0
    text = (FORMATS / "ctS-old-one-per-line.txt").read_text()
    want = dict(line.split("\t\t") for line in text.splitlines())
    want = {k.strip(): int(v) for k, v in want.items()}
    got = ctsource.conntrack_stats(fake_conntrack(tmp_path, text))
    assert got["entries"] == want.pop("entries")
    assert got["counters"] == want and got["counters"]["insert_failed"] == 2
    assert got["first_cpu_only"] and "first CPU" in got["source"]


def test_conntrack_S_it_cannot_read_is_an_error_not_an_empty_table(tmp_path):
    exe = fake_conntrack(tmp_path, "something else entirely\n")
    with pytest.raises(ctsource.SourceError, match="line 1"):
        ctsource.conntrack_stats(exe)
    with pytest.raises(ctsource.SourceError, match="no counters"):
        ctsource.conntrack_stats(fake_conntrack(tmp_path, "\n"))


@pytest.mark.parametrize("name", ["stat-gopsutil-648bf4e.txt", "stat-node_exporter-fixture.txt"])
def test_proc_stat_captures(name):
    lines = (REAL / name).read_text().splitlines()
    header, rows = lines[0].split(), [row.split() for row in lines[1:]]
    got = parsers.parse_conntrack_stat("\n".join(lines))
    assert got["cpus"] == len(rows)
    for i, col in enumerate(header):
        values = [int(row[i], 16) for row in rows]
        if col == "entries":
            assert got["entries"] == max(values)
        else:
            assert got["counters"][col] == sum(values)


# --- arbitrary mixes ------------------------------------------------------------------------

FORMAT_LINES = sorted({line for p in TABLES for line in p.read_text().splitlines()
                       if " use=" in line})
SUMMARY_LINES = ["conntrack v1.4.7 (conntrack-tools): 12 flow entries have been shown.",
                 "conntrack v0.9.12 (conntrack-tools): 1 flow entries have been deleted."]
garbage = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"
                                   "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
            min_size=1, max_size=80).filter(str.strip),
    st.sampled_from(FORMAT_LINES).flatmap(
        lambda line: st.integers(1, max(1, line.index(" use=") - 1)).map(lambda k: line[:k])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(FORMAT_LINES).map(lambda line: ("entry", line)),
    entries().map(lambda e: ("entry", e[0].rstrip("\n"))),
    st.sampled_from(SUMMARY_LINES).map(lambda line: ("summary", line)),
    garbage.map(lambda line: ("garbage", line)),
), max_size=40))
def test_mixes_of_every_format_and_garbage_add_up(pieces):
    text = "".join(line + "\n" for _, line in pieces)
    total = sum(1 for line in text.splitlines() if line.strip())
    full = by_parse_line(text)
    stats = FlowStats(TIMEOUTS)
    stats.feed_blocks([text])
    s = stats.summary()
    assert s["entries_read"] + s["malformed"] + s["summary_lines"] == total
    assert (s["entries_read"], s["malformed"], s["summary_lines"], s["offloaded"]) == (
        full["entries"], full["malformed"], full["summary"], full["offloaded"])
    assert s["entries_read"] >= sum(kind == "entry" for kind, _ in pieces)
    assert s["summary_lines"] == sum(kind == "summary" for kind, _ in pieces)


# --- estimates ------------------------------------------------------------------------------

def test_margin_is_the_finite_population_binomial_interval():
    # 500 read of 3,000, 1,000 of them (a third) in the class: p = 1/3
    p, n, big_n = 1 / 3, 500, 3000
    want = 1.96 * (p * (1 - p) / n) ** 0.5 * ((big_n - n) / (big_n - 1)) ** 0.5 * big_n
    assert margin95(1000, n, big_n) == -(-want // 1)
    assert margin95(1000, 3000, 3000) == 0  # the whole table: exact


# --- through the CLI: the sample-unreliable finding, estimates shown as estimates -------------

def _udp(i: int, unreplied: bool) -> str:
    head = f"ipv4     2 udp      17 {20 + i % 9} src=10.9.{i // 250}.{i % 250} dst=192.0.2.53 "
    ports = f"sport={1024 + i} dport=53 "
    back = f"src=192.0.2.53 dst=10.9.{i // 250}.{i % 250} sport=53 dport={1024 + i} "
    return (head + ports + ("[UNREPLIED] " if unreplied else "") + back
            + ("" if unreplied else "[ASSURED] ") + "mark=0 zone=0 use=2\n")


def _tree_with_table(tree, text: str, count: int | None = None):
    roots = tree("defaults-16g")
    roots.proc("net/nf_conntrack").write_text(text)
    if count is not None:
        roots.proc("sys/net/netfilter/nf_conntrack_count").write_text(f"{count}\n")
    return roots


@pytest.mark.parametrize(("bad", "level"), [(30, "warning"), (2, "info")])
def test_unreadable_lines_make_the_sample_unreliable(tree, bad, level):
    good = [_udp(i, i % 3 == 0) for i in range(1000)]
    junk = ["ipv4     2 udp      17 25 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=53\n",  # no use=
            "garbage from a broken copy\n"]
    lines = good[:500] + [junk[i % 2] for i in range(bad)] + good[500:]
    roots = _tree_with_table(tree, "".join(lines))
    proc = run_cli("audit", "--format", "json", *tree_args(roots))
    report = json.loads(proc.stdout)
    finding = next(f for f in report["findings"] if f["rule"] == "sample-unreliable")
    assert finding["severity"] == level
    flows = report["facts"]["flows"]
    assert flows["malformed"] == bad and flows["entries_read"] == 1000
    kinds = {k["kind"]: k["lines"] for k in flows["malformed_kinds"]}
    assert kinds == {"truncated (no use=)": bad // 2, "not a conntrack entry": bad - bad // 2}
    if level == "warning":
        share = bad / (1000 + bad)
        assert f"{share:.1%} of the table sample's lines are unreadable" in finding["summary"]
        assert "truncated (no use=) x 15" in finding["summary"]
        assert "garbage from a broken copy" in finding["explanation"]
        assert proc.returncode == 1


def test_a_clean_sample_draws_no_unreliable_finding(tree):
    roots = _tree_with_table(tree, "".join(_udp(i, True) for i in range(200)))
    report = json.loads(run_cli("audit", "--format", "json", *tree_args(roots)).stdout)
    assert not [f for f in report["findings"] if f["rule"] == "sample-unreliable"]
    flows = report["facts"]["flows"]
    assert (flows["malformed_share"], flows["malformed_kinds"]) == (0.0, [])


def test_scaled_counts_are_shown_as_estimates_everywhere(tree):
    # 3,000 lines on disk, nf_conntrack_count says 100,000: --sample-limit 2000 reads 2,000
    # and scales by 50; unreplied UDP is 2 in 3 of them.
    lines = [_udp(i, i % 3 != 0) for i in range(3000)]
    roots = _tree_with_table(tree, "".join(lines), count=100000)
    n, big_n = 2000, 100000
    unreplied = sum("[UNREPLIED]" in line for line in lines[:n])
    p = unreplied / n
    est = round(unreplied * big_n / n)
    margin = -(-1.96 * (p * (1 - p) / n) ** 0.5 * ((big_n - n) / (big_n - 1)) ** 0.5 * big_n
               // 1)
    shown = f"{est:,} \u00b1 {int(margin):,}"

    args = ["--sample-limit", str(n), *tree_args(roots)]
    table = run_cli("audit", *args).stdout
    assert f"({shown})" in table  # the dominance finding's summary in the table
    explain = run_cli("audit", "--explain", *args).stdout
    assert f"{shown} of the sampled table's entries" in explain
    assert "95 % sampling margin" in explain
    report = json.loads(run_cli("audit", "--format", "json", *args).stdout)
    cls = report["facts"]["flows"]["classes"]["udp/unreplied"]
    assert (cls["entries"], cls["margin"]) == (est, margin)
    assert report["facts"]["flows"]["margins"]["by_l4"]["udp"] == 0  # all of them: exact
    finding = next(f for f in report["findings"] if f["rule"] == "udp-unreplied-dominance")
    assert shown in finding["summary"]


def test_missing_proc_stat_is_read_from_conntrack_S_only_when_missing(tmp_path, monkeypatch):
    text = (FORMATS / "ctS-procfs-per-cpu.txt").read_text()
    exe = fake_conntrack(tmp_path, text)
    monkeypatch.setenv("PATH", f"{Path(exe).parent}:{os.environ.get('PATH', '')}")
    missing = {"stat": None, "conntrack": {"loaded": True}}
    sampler.fill_missing_stat(Roots(), missing)
    assert missing["stat"] == ctsource.conntrack_stats(exe)
    present = {"stat": {"source": "/proc/net/stat/nf_conntrack"}, "conntrack": {"loaded": True}}
    sampler.fill_missing_stat(Roots(), present)
    assert present["stat"] == {"source": "/proc/net/stat/nf_conntrack"}
    replay = {"stat": None, "conntrack": {"loaded": True}}  # a captured tree: never this host's
    sampler.fill_missing_stat(Roots(tmp_path / "proc", tmp_path / "sys"), replay)
    assert replay["stat"] is None
