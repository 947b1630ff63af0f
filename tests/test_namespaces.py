"""Other network namespaces' tables: read through the procfs root (nsview), weighed
against the global max (nsload), and the advice on each side of the namespace boundary:
the host sizes max for the fullest namespace, a namespace gets the host's command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import materialize, run_cli, tree_args

from ct_tune import engine, facts, nsload, nsview, profiles, ruleset, snapshot
from ct_tune.errors import InputErrors

STAT_HEADER = ("entries clashres found new invalid ignore delete chainlength insert "
               "insert_failed drop early_drop icmp_error expect_new expect_create "
               "expect_delete search_restart")


def stat_text(entries: int, drop: int, cpus: int = 2) -> str:
    """/proc/net/stat/nf_conntrack: entries on every line, drop split over CPUs."""
    lines = [STAT_HEADER]
    for cpu in range(cpus):
        d = drop // cpus + (drop % cpus if cpu == 0 else 0)
        fields = [entries] + [0] * 9 + [d] + [0] * 6
        lines.append(" ".join(f"{v:08x}" for v in fields))
    return "\n".join(lines) + "\n"


def fake_procfs(tmp: Path) -> Path:
    """self in net:[1]; pids 10 and 12 share net:[2] (full, dropping), 11 in net:[3],
    13 in our own namespace, 14 without a stat file (conntrack not loaded there)."""
    proc = tmp / "proc"
    (proc / "self/ns").mkdir(parents=True)
    os.symlink("net:[1]", proc / "self/ns/net")
    for pid, ns, stat in ((10, 2, stat_text(2048, 901)), (12, 2, stat_text(2048, 901)),
                          (11, 3, stat_text(7, 0)), (13, 1, stat_text(5, 0)), (14, 4, None)):
        (proc / f"{pid}/ns").mkdir(parents=True)
        os.symlink(f"net:[{ns}]", proc / f"{pid}/ns/net")
        if stat:
            (proc / f"{pid}/net/stat").mkdir(parents=True)
            (proc / f"{pid}/net/stat/nf_conntrack").write_text(stat)
    return proc


def test_scan_reads_each_other_namespace_once_busiest_first(tmp_path: Path):
    names = tmp_path / "netns"
    names.mkdir()
    proc = fake_procfs(tmp_path)
    seen = nsview.scan(proc, names)
    assert seen["own"] == "net:[1]" and seen["truncated"] is False
    assert [(n["netns"], n["entries"], n["drop"]) for n in seen["list"]] == [
        ("net:[2]", 2048, 901), ("net:[3]", 7, 0)]
    assert seen["list"][0]["pid"] in (10, 12)
    assert seen["list"][0]["source"].endswith("/net/stat/nf_conntrack")


def test_scan_of_a_captured_tree_is_none(tmp_path: Path):
    (tmp_path / "proc").mkdir()
    assert nsview.scan(tmp_path / "proc", None) is None


def test_scan_is_bounded(tmp_path: Path, monkeypatch):
    proc = fake_procfs(tmp_path)
    monkeypatch.setattr(nsview, "MAX_PIDS", 2)
    assert nsview.scan(proc, None)["truncated"] is True


def test_rates_and_busiest_prefer_the_namespace_dropping_now():
    first = {"list": [
        {"netns": "net:[2]", "pid": 10, "names": ["a"], "source": "s", "entries": 2048,
         "drop": 100, "early_drop": 0, "insert_failed": 0},
        {"netns": "net:[3]", "pid": 11, "names": [], "source": "s", "entries": 3000,
         "drop": 0, "early_drop": 0, "insert_failed": 0}]}
    last = {"list": [{**first["list"][0], "drop": 300}, first["list"][1]]}
    window = {"namespaces": nsload.rates(first, last, 2.0)}
    assert window["namespaces"]["list"][0] == {
        "netns": "net:[2]", "pid": 10, "names": ["a"], "peak": 2048, "drop_per_s": 100.0,
        "early_drop_per_s": 0.0, "insert_failed_per_s": 0.0}
    worst = nsload.busiest(last, window, 4096)
    # the one refusing connections now, not the larger quiet one
    assert (worst["netns"], worst["label"], worst["drop_per_s"], worst["use"]) == (
        "net:[2]", "a", 100.0, 0.5)
    assert worst["dropping"] == 1
    quiet = nsload.busiest(last, None, 4096)
    assert (quiet["netns"], quiet["label"], quiet["drop_per_s"]) == ("net:[3]", "pid 11", None)
    assert nsload.busiest(None, None, 4096) is None


def audit(host: dict, profile: str = "default") -> dict[str, engine.Finding]:
    prof = profiles.get(profiles.load(), profile)
    return {f.rule: f for f in engine.evaluate(ruleset.load(), host, prof)}


def with_full_namespace(host: dict, tmp_path: Path) -> dict:
    """The host's facts plus a namespace at max that drops now, as nsview and the window
    would record them (through the snapshot's validation, as audit --facts would)."""
    mx = host["sysctl"]["net.netfilter.nf_conntrack_max"]["value"]
    host["namespaces"] = {"own": "net:[1]", "pids": 40, "seen": 1, "truncated": False,
                          "list": [{"netns": "net:[4026532454]", "pid": 4242,
                                    "names": ["web"], "source": "/proc/4242/net/stat/x",
                                    "entries": mx, "drop": 5000, "early_drop": 0,
                                    "insert_failed": 0}]}
    host["window"] = {"seconds": 2.0, "polls": 3, "peak": 10, "mean": 10.0, "growth": 0,
                      "rates": {"drop_per_s": 0.0},
                      "namespaces": {"seconds": 2.0, "list": [{
                          "netns": "net:[4026532454]", "pid": 4242, "names": ["web"],
                          "peak": mx, "drop_per_s": 600.0, "early_drop_per_s": 0.0,
                          "insert_failed_per_s": 0.0}]}}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(host))
    return snapshot.load(str(path))


def test_host_sizes_max_for_a_full_namespace_it_reads(tmp_path: Path):
    host = facts.collect(materialize("defaults-16g", tmp_path))
    host["sysctl"]["net.netfilter.nf_conntrack_count"]["value"] = 10
    mx = host["sysctl"]["net.netfilter.nf_conntrack_max"]["value"]
    found = audit(with_full_namespace(host, tmp_path))
    cm = found["conntrack-max"]
    assert cm.severity == "critical", cm.summary
    assert "network namespace web (net:[4026532454])" in cm.summary
    assert "demand above the limit is unknown" in cm.summary
    assert cm.recommended > mx and cm.evidence["ns"]["entries"] == mx
    assert "table full in netns 4026532454" in cm.explanation
    drops = found["table-drops"]
    assert drops.severity == "critical" and "600.0 drops/s" in drops.summary
    assert "network namespace web" in drops.summary


def test_a_quiet_host_with_quiet_namespaces_stays_ok(tmp_path: Path):
    host = facts.collect(materialize("defaults-16g", tmp_path))
    host["sysctl"]["net.netfilter.nf_conntrack_count"]["value"] = 10
    host = with_full_namespace(host, tmp_path)
    host["namespaces"]["list"][0].update(entries=50, drop=0)
    host["window"]["namespaces"]["list"][0].update(peak=50, drop_per_s=0.0)
    found = audit(host)
    assert found["conntrack-max"].severity == "ok"
    assert found["table-drops"].severity == "ok"


def test_inside_a_namespace_a_host_only_value_comes_with_the_host_command(tmp_path: Path):
    host = facts.collect(materialize("container-netns", tmp_path))
    assert host["conntrack"]["initial_netns"] is False
    mx = host["sysctl"]["net.netfilter.nf_conntrack_max"]["value"]
    host["sysctl"]["net.netfilter.nf_conntrack_count"]["value"] = mx
    cm = audit(host)["conntrack-max"]
    assert cm.severity == "critical" and cm.scope == "host"
    assert cm.summary.endswith(f"set it on the host: sysctl -w "
                               f"net.netfilter.nf_conntrack_max={cm.recommended})")
    assert f"`sysctl -w net.netfilter.nf_conntrack_max={cm.recommended}`" in cm.explanation


def test_snapshot_rejects_a_malformed_namespace_list(tmp_path: Path):
    host = facts.collect(materialize("defaults-16g", tmp_path))
    host["namespaces"] = {"own": "net:[1]", "pids": 1, "seen": 1, "truncated": False,
                          "list": [{"netns": "net:[2]", "entries": "many"}]}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(host))
    with pytest.raises(InputErrors) as e:
        snapshot.load(str(path))
    assert "namespaces.list[0]" in str(e.value)


def test_a_capture_keeps_the_scan_and_its_replay_reads_it(tmp_path: Path):
    roots = materialize("defaults-16g", tmp_path)
    seen = {"own": "net:[1]", "pids": 3, "seen": 1, "truncated": False,
            "list": [{"netns": "net:[7]", "pid": 42, "names": ["web"], "source": "s",
                      "entries": 262144, "drop": 9, "early_drop": 0, "insert_failed": 0}]}
    (roots.procfs / facts.NAMESPACES_FILE).write_text(json.dumps(seen))
    host = facts.collect(roots)
    assert host["namespaces"] == seen and host["errors"] == []
    assert "network namespace web" in audit(host)["conntrack-max"].summary


def test_a_corrupt_captured_scan_is_one_line_naming_the_file(tmp_path: Path):
    roots = materialize("defaults-16g", tmp_path)
    path = roots.procfs / facts.NAMESPACES_FILE
    path.write_text('{"own": 1}')
    proc = run_cli("audit", "--format", "json", *tree_args(roots))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == f"ct-tune: {path}: namespaces.own: expected string, found 1\n"
