"""`ct-tune check` as Nagios/Icinga run it, and `--textfile` as node_exporter reads it."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
from conftest import ROOT, run_cli, tree_args
from hypothesis import given, settings
from hypothesis import strategies as st

from ct_tune import textfile

prometheus_parser = pytest.importorskip("prometheus_client.parser")

# Monitoring Plugins development guidelines, "Performance data":
#   'label'=value[UOM];[warn];[crit];[min];[max]
# label quoted (no ' or = inside), value/min/max in [-0-9.], UOM one of
# s us ms % B KB MB TB c, warn/crit in the range format ([@]start:end), trailing
# unfilled semicolons may be dropped.
_NUM = r"-?[0-9]+(?:\.[0-9]+)?"
_RANGE = rf"@?(?:(?:{_NUM}|~):)?(?:{_NUM})?"
PERF_ITEM = re.compile(
    rf"'(?P<label>[^'=]+)'=(?P<value>{_NUM})(?P<uom>s|us|ms|%|B|KB|MB|TB|c)?"
    rf"(?:;(?P<warn>{_RANGE})(?:;(?P<crit>{_RANGE})(?:;(?P<min>{_NUM})?"
    rf"(?:;(?P<max>{_NUM})?)?)?)?)?")
STATUS_LINE = re.compile(r"CT-TUNE (OK|WARNING|CRITICAL|UNKNOWN) - ([^|\n]+?)(?: \| (.*))?")


def parse_check(stdout: str) -> tuple[str, str, dict[str, dict[str, str | None]]]:
    """(state, text, perfdata by label) of a plugin's output, strictly per the guidelines."""
    first = stdout.split("\n", 1)[0]
    m = STATUS_LINE.fullmatch(first)
    assert m, f"not a plugin status line: {first!r}"
    perf: dict[str, dict[str, str | None]] = {}
    for item in (m.group(3) or "").split(" ") if m.group(3) else []:
        pm = PERF_ITEM.fullmatch(item)
        assert pm, f"perfdata item not per the guidelines: {item!r}"
        perf[pm.group("label")] = pm.groupdict()
    assert "|" not in "".join(stdout.splitlines(keepends=True)[1:])  # long output: no perfdata
    return m.group(1), m.group(2), perf


def check(roots, *extra: str):
    return run_cli("check", *tree_args(roots), *extra)


def at_usage(tree, fraction: float, roots=None):
    """defaults-16g with nf_conntrack_count set to `fraction` of nf_conntrack_max."""
    roots = roots or tree("defaults-16g")
    nf = roots.procfs / "sys/net/netfilter"
    limit = int((nf / "nf_conntrack_max").read_text())
    count = int(limit * fraction)
    os.chmod(nf / "nf_conntrack_count", 0o644)
    (nf / "nf_conntrack_count").write_text(f"{count}\n")
    return roots, count, limit


def test_check_critical_on_a_nearly_full_table_with_drops(tree):
    proc = check(tree("nearly-full-drops"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    state, text, perf = parse_check(proc.stdout)
    assert state == "CRITICAL"
    assert "95.7% full" in text and "table-drops" in text and "conntrack-max" in text
    e = perf["entries"]
    assert (e["value"], e["min"], e["max"]) == ("251000", "0", "262144")
    # thresholds in entries: 75 % and 95 % of max
    assert (e["warn"], e["crit"]) == ("196608", "249036")
    u = perf["usage"]
    assert u["uom"] == "%" and (u["warn"], u["crit"], u["min"], u["max"]) == (
        "75", "95", "0", "100")
    assert float(u["value"]) == pytest.approx(251000 / 262144 * 100, abs=0.01)
    # long output: one line per finding at warning or above, worst first
    rest = proc.stdout.splitlines()[1:]
    assert rest[0].startswith("[CRITICAL] ") and any(r.startswith("[WARNING] ") for r in rest)
    assert "drop_per_s" not in perf  # no polling unless --duration


def test_check_ok_on_default_settings(tree):
    proc = check(tree("defaults-16g"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state, _text, perf = parse_check(proc.stdout)
    assert state == "OK"
    assert perf["entries"]["value"] == "1234"
    assert proc.stdout.count("\n") == 1  # nothing at warning: no long output


def test_check_warning_at_80_percent(tree):
    roots, count, _limit = at_usage(tree, 0.80)
    proc = check(roots)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    state, _text, perf = parse_check(proc.stdout)
    assert state == "WARNING"
    assert perf["entries"]["value"] == str(count)
    assert float(perf["usage"]["value"]) == pytest.approx(80, abs=0.01)


def test_check_thresholds_options(tree):
    roots = tree("defaults-16g")  # 1234 of 262144: 0.47 %
    proc = check(roots, "--warning", "0.4", "--critical", "50")
    assert proc.returncode == 1
    state, _, perf = parse_check(proc.stdout)
    assert state == "WARNING"
    assert (perf["entries"]["warn"], perf["entries"]["crit"]) == ("1048", "131072")
    assert (perf["usage"]["warn"], perf["usage"]["crit"]) == ("0.4", "50")
    proc = check(roots, "-w", "0.1", "-c", "0.45")
    assert proc.returncode == 2 and parse_check(proc.stdout)[0] == "CRITICAL"
    # exactly at the threshold is not above it: no alert (the range 0..N is inclusive)
    roots, _, _ = at_usage(tree, 0.5, roots)
    proc = check(roots, "-w", "50", "-c", "60")
    assert proc.returncode == 0, proc.stdout
    assert parse_check(proc.stdout)[1].startswith("table 50.0% full")
    proc = check(roots, "-w", "49.99", "-c", "60")
    assert proc.returncode == 1, proc.stdout


@pytest.mark.parametrize("args", [["--bogus"], ["--warning", "101"], ["--critical", "x"],
                                  ["--warning", "90", "--critical", "80"]])
def test_check_usage_error_is_unknown_3_never_2(args, tree):
    proc = check(tree("defaults-16g"), *args)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    state, text, perf = parse_check(proc.stdout)
    assert state == "UNKNOWN" and text.startswith("usage: ") and perf == {}


@pytest.mark.parametrize("name,reason", [
    ("corrupt-values", "nf_conntrack_max: expected an integer, found '26214x4'"),
    ("corrupt-stat", "nf_conntrack: line 2: 3 fields, header has 17"),
])
def test_check_unreadable_input_is_unknown(name, reason, tree):
    proc = check(tree(name))
    assert proc.returncode == 3
    state, text, _ = parse_check(proc.stdout)
    # the reason leads the status line, and is in the long output in full
    assert state == "UNKNOWN" and text.split("; ")[0].endswith(reason)
    assert any(line.startswith("[INPUT] ") and line.endswith(reason)
               for line in proc.stdout.splitlines()[1:])
    assert "Traceback" not in proc.stderr


def test_check_procfs_missing_files_is_unknown_not_ok(tree, tmp_path):
    roots = tree("defaults-16g")
    (roots.procfs / "sys/net/netfilter/nf_conntrack_max").unlink()
    proc = check(roots)
    assert proc.returncode == 3, proc.stdout
    assert "nf_conntrack_max: missing while" in parse_check(proc.stdout)[1]
    proc = run_cli("check", "--procfs", str(tmp_path / "nope"), "--sysfs", str(tmp_path))
    assert proc.returncode == 3, proc.stdout
    assert parse_check(proc.stdout)[1].startswith(f"{tmp_path / 'nope'}: not a procfs")


def test_check_duration_adds_peak_and_rates(tree):
    proc = check(tree("nearly-full-drops"), "--duration", "0.3", "--interval", "0.1")
    assert proc.returncode == 2
    _, _, perf = parse_check(proc.stdout)
    # the captured counters do not move: rates 0, peak the captured count
    assert perf["drop_per_s"]["value"] == "0" and perf["insert_failed_per_s"]["value"] == "0"
    assert perf["entries_peak"]["value"] == "251000"


def test_check_agrees_with_audit_json(tree):
    roots = tree("nearly-full-drops")
    report = json.loads(run_cli("audit", "--format", "json", "--no-sample",
                                *tree_args(roots)).stdout)
    proc = check(roots, "-w", "99", "-c", "100")  # usage never decides: findings do
    assert parse_check(proc.stdout)[0] == report["status"].upper()
    folded = sorted(f["rule"] for f in report["findings"]
                    if f["severity"] in ("warning", "critical"))
    lines = proc.stdout.splitlines()[1:]
    assert sorted(line.split("] ", 1)[1].split(":", 1)[0] for line in lines) == folded


# --- textfile ------------------------------------------------------------------------

def families(text: str) -> dict[str, object]:
    return {f.name: f for f in prometheus_parser.text_string_to_metric_families(text)}


def sample_values(fam) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples}


@pytest.mark.parametrize("name", ["nearly-full-drops", "defaults-16g", "kernel-4.19"])
def test_textfile_matches_audit_json(name, tree, tmp_path):
    roots = tree(name)
    out = tmp_path / "ct_tune.prom"
    proc = run_cli("audit", "--format", "json", "--textfile", str(out), *tree_args(roots))
    report = json.loads(proc.stdout)
    text = out.read_text()
    fams = families(text)
    for fam in fams.values():
        assert fam.name.startswith("ct_tune_"), fam.name
        assert fam.type == "gauge" and fam.documentation
        assert f"# HELP {fam.name} " in text and f"# TYPE {fam.name} gauge" in text
    assert not re.search(r"^node_", text, re.M)
    assert sample_values(fams["ct_tune_last_run_success"]) == {(): 1}
    assert sample_values(fams["ct_tune_input_errors"]) == {(): 0}
    assert sample_values(fams["ct_tune_status"]) == {
        (): {"ok": 0, "warning": 1, "critical": 2}[report["status"]]}
    by_sev = {k[0][1]: v for k, v in sample_values(fams["ct_tune_findings"]).items()}
    for sev in ("ok", "info", "warning", "critical"):
        assert by_sev[sev] == sum(1 for f in report["findings"] if f["severity"] == sev)
    cur = {k[0][1]: v for k, v in sample_values(fams["ct_tune_parameter_current"]).items()}
    rec = {k[0][1]: v for k, v in sample_values(fams["ct_tune_parameter_recommended"]).items()}
    with_param = [f for f in report["findings"] if f["parameter"]]
    assert cur == {f["parameter"]: f["current"] for f in with_param}
    assert rec == {f["parameter"]: f["recommended"] for f in with_param}
    sysctl = report["facts"]["sysctl"]
    ratio = (sysctl["net.netfilter.nf_conntrack_count"]["value"]
             / sysctl["net.netfilter.nf_conntrack_max"]["value"])
    assert sample_values(fams["ct_tune_usage_ratio"])[()] == pytest.approx(ratio)
    assert 0 <= sample_values(fams["ct_tune_usage_ratio"])[()] <= 1  # a ratio, not percent
    assert "ct_tune_sampled_peak_entries" not in fams  # not polled
    import time
    ts = sample_values(fams["ct_tune_last_run_timestamp_seconds"])[()]
    assert abs(ts - time.time()) < 120


def test_textfile_written_atomically_with_mode_0644(tree, tmp_path):
    out = tmp_path / "node" / "ct_tune.prom"
    out.parent.mkdir()
    out.write_text("old\n")
    before = out.stat().st_ino
    old_umask = os.umask(0o077)
    try:
        proc = check(tree("nearly-full-drops"), "--textfile", str(out), "--duration", "0.2",
                     "--interval", "0.1")
    finally:
        os.umask(old_umask)
    assert proc.returncode == 2
    assert os.listdir(out.parent) == ["ct_tune.prom"]  # no temp file left
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert out.stat().st_ino != before  # replaced by rename, never rewritten in place
    fams = families(out.read_text())
    assert sample_values(fams["ct_tune_status"]) == {(): 2}
    assert sample_values(fams["ct_tune_sampled_peak_entries"]) == {(): 251000}


def test_check_textfile_status_follows_the_thresholds(tree, tmp_path):
    out = tmp_path / "c.prom"
    proc = check(tree("defaults-16g"), "-w", "0.1", "-c", "0.2", "--textfile", str(out))
    assert proc.returncode == 2
    assert sample_values(families(out.read_text())["ct_tune_status"]) == {(): 2}


@pytest.mark.parametrize("cmd", ["audit", "check"])
def test_textfile_bad_input_still_writes_success_0(cmd, tree, tmp_path):
    roots = tree("corrupt-values")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "ct_tune.prom"
    out.write_text("ct_tune_last_run_success 1\n")  # the last good run's file
    proc = run_cli(cmd, "--textfile", str(out), *tree_args(roots))
    assert proc.returncode == 3
    fams = families(out.read_text())
    assert sample_values(fams["ct_tune_last_run_success"]) == {(): 0}
    assert sample_values(fams["ct_tune_status"]) == {(): 3}
    assert sample_values(fams["ct_tune_input_errors"]) == {(): 1}
    assert os.listdir(out.parent) == ["ct_tune.prom"]
    # a run that could not assess anything at all (no procfs) still writes the file
    proc = run_cli(cmd, "--textfile", str(out), "--procfs", str(tmp_path / "nope"),
                   "--sysfs", str(tmp_path / "nope"))
    assert proc.returncode == 3
    fams = families(out.read_text())
    assert sample_values(fams["ct_tune_last_run_success"]) == {(): 0}
    assert sample_values(fams["ct_tune_status"]) == {(): 3}
    assert "ct_tune_findings" not in fams
    assert os.listdir(out.parent) == ["ct_tune.prom"]


@pytest.mark.parametrize("cmd", ["audit", "check"])
@pytest.mark.parametrize("target", ["dir.prom", "metrics.txt", "dir"])
def test_textfile_bad_target_is_a_clean_exit_3(cmd, target, tree, tmp_path):
    roots = tree("defaults-16g")
    out = tmp_path / "out"
    (out / "dir.prom").mkdir(parents=True)
    (out / "dir").mkdir()
    proc = run_cli(cmd, "--textfile", str(out / target), *tree_args(roots))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and ".prom" in proc.stdout + proc.stderr
    assert sorted(os.listdir(out)) == ["dir", "dir.prom"]
    assert os.listdir(out / "dir.prom") == [] and os.listdir(out / "dir") == []


def test_textfile_unwritable_directory_is_exit_3(tree, tmp_path):
    proc = run_cli("audit", "--textfile", str(tmp_path / "missing" / "x.prom"),
                   *tree_args(tree("defaults-16g")))
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"ct-tune: {tmp_path / 'missing' / 'x.prom'}: cannot write")


def test_textfile_label_values_are_escaped():
    weird = 'net.netfilter.x"y\\z\nw'
    report = {"status": "warning", "profile": 'p"1', "facts": {}, "findings": [
        {"rule": "r", "severity": "warning", "parameter": weird, "current": 5,
         "recommended": 7}]}
    text = textfile.render(report, 1700000000.5, version="1")
    assert len([line for line in text.splitlines() if "ct_tune_parameter_current{" in line]) == 1
    fams = families(text)
    assert sample_values(fams["ct_tune_parameter_current"]) == {(("parameter", weird),): 5}
    assert sample_values(fams["ct_tune_parameter_recommended"]) == {(("parameter", weird),): 7}
    assert sample_values(fams["ct_tune_last_run_timestamp_seconds"]) == {(): 1700000000.5}


def test_shipped_systemd_service_runs_a_valid_check(tree, tmp_path):
    """The unit's ExecStart is a command line this ct-tune accepts, and the exit statuses
    it treats as success are exactly check's results (1, 2), never 3."""
    unit = (ROOT / "contrib/systemd/ct-tune-textfile.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M).group(1).split()
    assert re.search(r"^SuccessExitStatus=1 2$", unit, re.M)
    assert exec_start[0].endswith("/ct-tune") and exec_start[1] == "check"
    args = exec_start[1:]
    target = args[args.index("--textfile") + 1]
    assert re.search(rf"^ReadWritePaths=-?{re.escape(os.path.dirname(target))}$", unit, re.M)
    out = tmp_path / "out" / os.path.basename(target)
    out.parent.mkdir()
    args[args.index("--textfile") + 1] = str(out)
    proc = run_cli(*args, *tree_args(tree("nearly-full-drops")))
    assert proc.returncode == 2 and proc.stdout.startswith("CT-TUNE CRITICAL - ")
    assert sample_values(families(out.read_text())["ct_tune_status"]) == {(): 2}
    timer = (ROOT / "contrib/systemd/ct-tune-textfile.timer").read_text()
    assert "WantedBy=timers.target" in timer and re.search(r"^OnUnitActiveSec=", timer, re.M)


_SEVS = ("ok", "info", "unknown", "warning", "critical")


@settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 2**31), limit=st.integers(0, 2**31),
       thresholds=st.tuples(st.floats(0, 100), st.floats(0, 100)).map(sorted),
       found=st.lists(st.tuples(st.sampled_from(_SEVS), st.text(max_size=30)), max_size=6),
       rates=st.none() | st.tuples(st.floats(0, 1e9), st.floats(0, 1e9)))
def test_check_output_is_always_a_valid_plugin_line(count, limit, thresholds, found, rates):
    """Whatever the numbers and the findings' text ('|' and line breaks included), the first
    line parses per the guidelines and the state is never better than the usage says."""
    from ct_tune import check as plugin
    from ct_tune.findings import status

    warning, critical = thresholds
    report = {
        "status": status([type("F", (), {"severity": s})() for s, _ in found]),
        "findings": [{"rule": f"r{i}|x", "severity": s, "summary": text}
                     for i, (s, text) in enumerate(found)],
        "facts": {"conntrack": {"loaded": True},
                  "sysctl": {plugin.COUNT: {"value": count}, plugin.MAX: {"value": limit}},
                  "window": {"peak": count, "rates": {"drop_per_s": rates[0],
                                                      "insert_failed_per_s": rates[1]}}
                  if rates else {}}}
    state, out = plugin.evaluate(report, warning, critical)
    got, _, perf = parse_check(out)
    assert got == state.upper()
    if limit:
        used = plugin.usage_state(count, limit, warning, critical)
        assert plugin.worst(state, used) == state
        assert int(perf["entries"]["warn"]) <= int(perf["entries"]["crit"]) <= limit
    if rates:
        assert "drop_per_s" in perf and "insert_failed_per_s" in perf
