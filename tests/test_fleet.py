"""ct-tune fleet: many real snapshots (collected from tests/hosts trees) in one report."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import materialize, run_cli, tree_args

from ct_tune import engine, fleet, profiles, ruleset, snapshot

#: captured hosts of every status: critical, warning (two), unknown, ok (two)
HOSTS = ("nearly-full-drops", "keepalive-trap", "kube-proxy-1.30-flags", "corrupt-values",
         "defaults-16g", "kernel-3.10-el7")
RANK = {"critical": 0, "warning": 1, "unknown": 2, "ok": 3}


@pytest.fixture(scope="module")
def snaps(tmp_path_factory) -> dict[str, Path]:
    """name -> a snapshot made by `ct-tune collect --procfs --sysfs` of that tree."""
    base = tmp_path_factory.mktemp("fleet")
    out = {}
    for name in HOSTS:
        roots = materialize(name, base / "trees")
        path = base / f"{name}.json"
        proc = run_cli("collect", "--no-sample", "-o", str(path), *tree_args(roots))
        assert path.exists(), proc.stderr
        out[name] = path
    return out


def _fleet(*args: str) -> tuple[int, dict, str]:
    proc = run_cli("fleet", "--format", "json", *args)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def _audit(path: Path) -> dict:
    return json.loads(run_cli("audit", "--format", "json", "--facts", str(path)).stdout)


def _fleet_dir(tmp_path: Path, snaps: dict[str, Path], names: list[str]) -> Path:
    d = tmp_path / "fleet"
    d.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(snaps[n], d / f"{n}.json")
    return d


def test_each_host_is_what_audit_facts_says_worst_first(snaps, tmp_path):
    d = _fleet_dir(tmp_path, snaps, list(HOSTS))
    code, doc, _ = _fleet(str(d))
    assert code == 2  # a critical host
    assert len(doc["hosts"]) == len(HOSTS) and doc["skipped"] == []
    for h in doc["hosts"]:
        audit = _audit(Path(h["source"]))
        facts = audit["facts"]
        assert h["status"] == audit["status"]
        assert h["host"] == facts["host"]["hostname"]
        assert h["kernel"] == facts["host"]["kernel_release"]
        assert h["findings"] == [
            {"id": f["rule"], "severity": f["severity"], "parameter": f["parameter"],
             "current": f["current"], "recommended": f["recommended"], "why": f["summary"]}
            for f in audit["findings"]]
        count = facts["sysctl"].get("net.netfilter.nf_conntrack_count", {}).get("value")
        limit = facts["sysctl"].get("net.netfilter.nf_conntrack_max", {}).get("value")
        assert (h["count"], h["max"]) == (count, limit)
        assert h["usage"] == (round(count / limit, 6) if count is not None and limit
                              else None)
    # worst first: by status, then the fullest table first
    keys = [(RANK[h["status"]], -(h["usage"] or 0)) for h in doc["hosts"]]
    assert keys == sorted(keys)
    assert {h["status"] for h in doc["hosts"]} == set(RANK)


def test_json_keys_are_the_fleet_schema(snaps, tmp_path):
    _, doc, _ = _fleet(str(snaps["nearly-full-drops"]), str(tmp_path / "missing.json"))
    assert set(doc) == {"schema", "hosts", "skipped", "summary"}
    assert doc["schema"] == "ct-tune-fleet/1"
    (host,) = doc["hosts"]
    assert set(host) == {"source", "host", "kernel", "status", "count", "max", "usage",
                         "findings"}
    assert all(set(f) == {"id", "severity", "parameter", "current", "recommended", "why"}
               for f in host["findings"])
    (skip,) = doc["skipped"]
    assert set(skip) == {"source", "errors"}
    assert doc["summary"] and all(set(s) == {"id", "severity", "hosts", "text"}
                                  for s in doc["summary"])


def test_summary_counts_hosts_per_finding_from_their_audits(snaps, tmp_path):
    # two more copies of the warning hosts: counts above one
    names = list(HOSTS)
    d = _fleet_dir(tmp_path, snaps, names)
    for n in ("keepalive-trap", "kube-proxy-1.30-flags"):
        shutil.copy(snaps[n], d / f"copy-of-{n}.json")
    _, doc, _ = _fleet(str(d))
    expected: Counter[tuple[str, str]] = Counter()
    over = Counter()
    for path in sorted(d.iterdir()):
        audit = _audit(path)
        expected.update({(f["rule"], f["severity"]) for f in audit["findings"]
                         if f["severity"] in ("warning", "critical", "unknown")})
        sysctl = audit["facts"]["sysctl"]
        count = sysctl.get("net.netfilter.nf_conntrack_count", {}).get("value")
        limit = sysctl.get("net.netfilter.nf_conntrack_max", {}).get("value")
        if count is not None and limit:
            over["critical" if count * 100 > 95 * limit else
                 "warning" if count * 100 > 75 * limit else "ok"] += 1
    rules = {(s["id"], s["severity"]): s["hosts"] for s in doc["summary"]
             if s["id"] != "table-usage"}
    assert rules == dict(expected)
    usage = {s["severity"]: s["hosts"] for s in doc["summary"] if s["id"] == "table-usage"}
    assert usage == {k: v for k, v in over.items() if k != "ok"}
    assert max(expected.values()) > 1
    for s in doc["summary"]:
        assert s["text"].startswith(f"{s['hosts']} host{'s' if s['hosts'] > 1 else ''}: ")
    assert [s["hosts"] for s in doc["summary"]] == sorted(
        (s["hosts"] for s in doc["summary"]), reverse=True)


def _special_files(tmp_path: Path) -> dict[str, str]:
    """Corrupt snapshots of every kind -> a word of the problem reported for it."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bad-json.json").write_text('{"schema": "ct-tune/facts", "sche')
    (bad / "wrong-schema.json").write_text(json.dumps({"schema": "other", "x": 1}))
    os.mkfifo(bad / "fifo.json")
    with open(bad / "huge.json", "wb") as f:  # sparse: past the 64 MiB bound
        f.truncate(65 * 1024 * 1024)
    return {str(bad / "bad-json.json"): "invalid JSON",
            str(bad / "wrong-schema.json"): "not a ct-tune facts snapshot",
            str(bad / "fifo.json"): "not a regular file (FIFO)",
            str(bad / "huge.json"): "larger than 64 MiB",
            str(tmp_path / "absent.json"): "cannot read"}


def test_corrupt_snapshots_are_reported_and_skipped_never_fatal(snaps, tmp_path):
    problems = _special_files(tmp_path)
    code, doc, err = _fleet(str(snaps["nearly-full-drops"]), str(tmp_path / "bad"),
                            str(tmp_path / "absent.json"), str(snaps["defaults-16g"]))
    assert code == 2  # the critical host still pages as critical
    assert [h["source"] for h in doc["hosts"]] == [str(snaps["nearly-full-drops"]),
                                                   str(snaps["defaults-16g"])]
    skipped = {s["source"]: s["errors"] for s in doc["skipped"]}
    assert set(skipped) == set(problems)
    for path, word in problems.items():
        assert any(e.startswith(f"{path}: ") and word in e for e in skipped[path]), skipped
        assert any(line.startswith(f"ct-tune: {path}: ") and word in line
                   for line in err.splitlines()), err
    assert "Traceback" not in err


def test_every_schema_problem_of_a_snapshot_is_reported(snaps, tmp_path):
    data = json.loads(snaps["defaults-16g"].read_text())
    data["host"]["mem_total_bytes"] = "16G"
    data["conntrack"].pop("loaded")
    path = tmp_path / "two-problems.json"
    path.write_text(json.dumps(data))
    code, doc, err = _fleet(str(path))
    assert code == 3 and doc["hosts"] == []
    (skip,) = doc["skipped"]
    assert len(skip["errors"]) == 2
    assert any("host.mem_total_bytes" in e for e in skip["errors"])
    assert any("missing field 'loaded'" in e for e in skip["errors"])
    assert err.count(f"ct-tune: {path}: ") == 2


@pytest.mark.parametrize(("names", "corrupt", "code"), [
    (["defaults-16g", "kernel-3.10-el7"], False, 0),
    (["keepalive-trap", "defaults-16g"], False, 1),
    (["nearly-full-drops", "keepalive-trap", "corrupt-values"], False, 2),
    (["corrupt-values", "defaults-16g"], False, 3),
    (["defaults-16g"], True, 3),   # a skipped snapshot: never ok
    (["keepalive-trap"], True, 1),  # warning > unknown, as for audit
])
def test_exit_status_is_the_worst_host_and_skipped_is_unknown(snaps, tmp_path, names,
                                                              corrupt, code):
    args = [str(snaps[n]) for n in names]
    if corrupt:
        (tmp_path / "bad.json").write_text("{")
        args.append(str(tmp_path / "bad.json"))
    got, doc, _ = _fleet(*args)
    assert got == code
    statuses = [h["status"] for h in doc["hosts"]] + ["unknown"] * len(doc["skipped"])
    assert got == {"critical": 2, "warning": 1, "unknown": 3, "ok": 0}[
        min(statuses, key=RANK.__getitem__)]


def test_a_directory_is_its_json_files_sorted_not_recursive(snaps, tmp_path):
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    shutil.copy(snaps["defaults-16g"], d / "b.json")
    shutil.copy(snaps["kernel-3.10-el7"], d / "a.json")
    shutil.copy(snaps["nearly-full-drops"], d / "sub" / "c.json")
    (d / "notes.txt").write_text("not a snapshot")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, doc, err = _fleet(str(d), str(empty))
    assert sorted(h["source"] for h in doc["hosts"]) == [str(d / "a.json"), str(d / "b.json")]
    # equal status and usage order: the input order decides nothing, the host name does
    assert [s["source"] for s in doc["skipped"]] == [str(empty)]
    assert f"ct-tune: {empty}: no *.json snapshots" in err
    assert code == 3


def test_table_lists_every_host_and_the_summary(snaps, tmp_path):
    d = _fleet_dir(tmp_path, snaps, list(HOSTS))
    proc = run_cli("fleet", str(d))
    _, doc, _ = _fleet(str(d))
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    rows = [next(i for i, line in enumerate(lines) if os.path.basename(h["source"]) in line)
            for h in doc["hosts"]]
    assert rows == sorted(rows)  # the table's host order is the JSON's, worst first
    for s in doc["summary"]:
        assert s["text"] in proc.stdout


def test_worker_processes_give_the_same_report(snaps, tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for n in range(140):  # enough for two workers (64 snapshots each at least)
        name = HOSTS[n % len(HOSTS)]
        shutil.copy(snaps[name], d / f"{n:03d}-{name}.json")
    one = run_cli("fleet", "--format", "json", "-j", "1", str(d))
    two = run_cli("fleet", "--format", "json", "-j", "2", str(d))
    assert one.returncode == two.returncode == 2
    assert one.stdout == two.stdout and one.stderr == two.stderr
    assert len(json.loads(one.stdout)["hosts"]) == 140


def test_rule_and_profile_options_apply_to_every_host(snaps, tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    # fails on Linux 3.10 (kernel-3.10-el7), nowhere else
    (rules_dir / "divide.toml").write_text(
        'id = "divide"\ntitle = "Divides by zero on 3.10"\n'
        'when = "(1 // (0 if host.kernel_release.startswith(\'3.10\') else 1)) is number"\n'
        'sources = ["tests/test_fleet.py"]\nexplanation = "x"\n'
        '[[severity]]\nlevel = "warning"\nsummary = "always"\n')
    code, doc, _ = _fleet("--rules-dir", str(rules_dir), "--profile", "k8s-node",
                          str(snaps["defaults-16g"]), str(snaps["kernel-3.10-el7"]))
    (skip,) = doc["skipped"]
    assert skip["source"] == str(snaps["kernel-3.10-el7"])
    assert "divide" in skip["errors"][0] and "audit failed" in skip["errors"][0]
    (host,) = doc["hosts"]
    assert ("divide", "warning") in {(f["id"], f["severity"]) for f in host["findings"]}
    audit = json.loads(run_cli("audit", "--format", "json", "--profile", "k8s-node",
                               "--rules-dir", str(rules_dir), "--facts",
                               str(snaps["defaults-16g"])).stdout)
    assert audit["profile"] == "k8s-node"
    assert [f["rule"] for f in audit["findings"]] == [f["id"] for f in host["findings"]]
    assert [f["summary"] for f in audit["findings"]] == [f["why"] for f in host["findings"]]
    assert code == 1


def test_bad_rules_or_profile_end_the_run_before_any_host(snaps, tmp_path):
    proc = run_cli("fleet", "--profile", "no-such", str(snaps["defaults-16g"]))
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith("ct-tune: ") and "no-such" in proc.stderr
    proc = run_cli("fleet")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr


def test_engine_without_explanations_finds_the_same(snaps):
    rules = ruleset.load(())
    prof = profiles.get(profiles.load(()), "default")
    for path in snaps.values():
        facts = snapshot.load(path)
        full = engine.evaluate(rules, facts, prof)
        brief = engine.evaluate(rules, facts, prof, explain=False)
        # unknown findings keep theirs: a fixed list of the missing inputs, not rendered
        assert [f.explanation for f in brief] == [
            f.explanation if f.severity == "unknown" else "" for f in full]
        assert [{**f.to_json(), "explanation": ""} for f in full] == \
            [{**f.to_json(), "explanation": ""} for f in brief]
    assert any(f.explanation for f in full)


def test_report_orders_by_status_usage_then_name():
    def host(name: str, status: str, count: int | None, limit: int | None) -> fleet.Host:
        return fleet.Host(f"{name}.json", name, "6.1", status, count, limit, ())

    hosts = [host("b", "ok", 10, 100), host("a", "ok", 10, 100), host("c", "ok", 90, 100),
             host("d", "warning", None, None), host("e", "unknown", 1, 100),
             host("f", "critical", 0, 0), host("g", "warning", 50, 100)]
    report = fleet.build(hosts)
    assert [h.host for h in report.hosts] == ["f", "g", "d", "e", "c", "a", "b"]
    assert report.status == "critical" and fleet.exit_code(report) == 2
    assert report.counts() == {"critical": 1, "warning": 2, "unknown": 1, "ok": 3}
    # c is over 75 %: one usage line, counted from count and max
    assert [(s.id, s.severity, s.hosts, s.text) for s in report.summary] == [
        ("table-usage", "warning", 1, "1 host: table over 75 %")]
    assert fleet.build([]).status == "unknown"


def test_json_and_html_to_a_file(snaps, tmp_path):
    pytest.importorskip("pygal", reason="--format html needs the 'report' extra (pygal)")
    (tmp_path / "bad.json").write_text("{")
    args = [str(snaps["keepalive-trap"]), str(snaps["corrupt-values"]),
            str(tmp_path / "bad.json")]
    out = tmp_path / "fleet.json"
    proc = run_cli("fleet", "--format", "json", "-o", str(out), *args)
    assert proc.returncode == 1 and proc.stdout == ""
    doc = json.loads(out.read_text())
    assert doc == json.loads(run_cli("fleet", "--format", "json", *args).stdout)
    page = tmp_path / "fleet.html"
    proc = run_cli("fleet", "--format", "html", "-o", str(page), *args)
    assert proc.returncode == 1 and proc.stdout == ""
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") or "<html" in html
    assert str(tmp_path / "bad.json") in html  # the skipped snapshot is listed
    for s in doc["summary"]:
        assert s["id"] in html
    # one overview column per finding, though the summary has a line per severity
    ids = {s["id"] for s in doc["summary"]} - {"table-usage"}
    assert len(ids) < len([s for s in doc["summary"] if s["id"] != "table-usage"])
    assert all(html.count(f"<th>{i}</th>") == 1 for i in ids)
    assert "<th>table-usage</th>" not in html
    usage = run_cli("fleet", "-o", str(tmp_path / "x"), *args)
    assert usage.returncode == 3 and "only with --format json or html" in usage.stderr
