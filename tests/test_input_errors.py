"""Corrupt, missing and mistyped inputs: every problem named by its file (or snapshot field),
all of them in one run, and the findings that needed them unknown, never a false green."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, tree_args

NF = "sys/net/netfilter"


def _audit_json(roots, *extra: str):
    proc = run_cli("audit", "--format", "json", *tree_args(roots), *extra)
    return proc, json.loads(proc.stdout) if proc.stdout else None


def _by_rule(report: dict) -> dict[str, dict]:
    return {f["rule"]: f for f in report["findings"]}


@pytest.mark.parametrize(("which", "command"), [
    ("procfs", ["audit"]), ("sysfs", ["audit"]), ("procfs", ["apply", "--dry-run", "--no-live"]),
    ("sysfs", ["collect"])])
def test_a_root_that_does_not_exist_is_exit_3_naming_it(tree, tmp_path, which, command):
    roots = tree("defaults-16g")
    args = {"procfs": str(roots.procfs), "sysfs": str(roots.sysfs)}
    args[which] = str(tmp_path / "typo")
    extra = ["--root", str(tmp_path / "scratch")] if command[0] == "apply" else []
    proc = run_cli(*command, "--procfs", args["procfs"], "--sysfs", args["sysfs"], *extra)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr == (f"ct-tune: {tmp_path / 'typo'}: not a {which} (--{which}): "
                           "does not exist\n")


def test_a_directory_that_is_not_a_procfs_is_exit_3(tree, tmp_path):
    roots = tree("defaults-16g")
    proc = run_cli("audit", "--procfs", str(roots.sysfs), "--sysfs", str(roots.sysfs))
    assert proc.returncode == 3
    assert proc.stderr == (f"ct-tune: {roots.sysfs}: not a procfs (--procfs): has no meminfo "
                           "or sys/kernel\n")
    proc = run_cli("audit", "--procfs", str(roots.procfs), "--sysfs", str(roots.procfs))
    assert proc.returncode == 3
    assert proc.stderr == f"ct-tune: {roots.procfs}: not a sysfs (--sysfs): has no devices/\n"


def test_every_captured_tree_passes_the_root_checks(tree):
    """Old kernels (2.6.32 era, 4.19), containers and a host without the module too."""
    for name in ("kernel-4.19", "container-netns", "module-not-loaded", "i686-lowmem"):
        proc = run_cli("audit", *tree_args(tree(name)))
        assert "not a procfs" not in proc.stderr and "not a sysfs" not in proc.stderr, name


def test_corrupt_checksum_is_blamed_on_its_proc_file_not_a_rule(tree):
    roots = tree("defaults-16g")
    path = roots.procfs / NF / "nf_conntrack_checksum"
    path.write_text("x1\n")
    proc, report = _audit_json(roots)
    assert proc.stderr == f"ct-tune: {path}: expected an integer, found 'x1'\n"
    assert "rules/" not in proc.stderr and ".toml" not in proc.stderr
    assert report["errors"] == [f"{path}: expected an integer, found 'x1'"]
    assert proc.returncode == 3 and report["status"] == "unknown"
    # a rule that reads every sysctl cannot say whether the checksum key drifted
    assert _by_rule(report)["not-persisted"]["severity"] == "unknown"
    # ... and one that does not read it is still assessed
    assert _by_rule(report)["conntrack-max"]["severity"] == "ok"


def test_four_corrupt_files_give_four_messages(tree):
    roots = tree("defaults-16g")
    bad = {
        roots.procfs / NF / "nf_conntrack_max": (b"-5\n", "-5 is below 0"),
        roots.procfs / NF / "nf_conntrack_udp_timeout": (b"\xff\xfe\n", "not text"),
        roots.procfs / NF / "nf_conntrack_tcp_timeout_established": (
            b"9" * 5000 + b"\n", "number too long (5000 digits)"),
        roots.procfs / "meminfo": (b"MemTotal lots\n", "expected 'Key: value kB'"),
    }
    for path, (content, _) in bad.items():
        path.write_bytes(content)
    proc = run_cli("audit", *tree_args(roots))
    lines = proc.stderr.splitlines()
    assert len(lines) == 4, proc.stderr
    for path, (_, problem) in bad.items():
        assert any(line.startswith(f"ct-tune: {path}: ") and problem in line for line in lines)
    assert "internal error" not in proc.stderr
    assert proc.returncode == 3
    assert "status: UNKNOWN" in proc.stdout and "4 input problems" in proc.stdout


def test_negative_max_names_the_file_and_the_range_and_gives_no_nonsense(tree):
    roots = tree("defaults-16g")
    path = roots.procfs / NF / "nf_conntrack_max"
    path.write_text("-5\n")
    proc, report = _audit_json(roots)
    assert proc.stderr == (f"ct-tune: {path}: -5 is below 0: not a valid entry count "
                           "(int, 0 means unlimited for max)\n")
    f = _by_rule(report)
    for rule in ("conntrack-max", "hash-buckets", "table-memory"):
        assert f[rule]["severity"] == "unknown", rule
        assert f[rule]["recommended"] is None
        assert f[rule]["unavailable"] == [f"{path}: -5 is below 0: not a valid entry count "
                                          "(int, 0 means unlimited for max)"]
    assert "-0.00" not in proc.stdout
    assert report["facts"]["sysctl"]["net.netfilter.nf_conntrack_max"]["value"] is None
    explain = run_cli("audit", "--explain", *tree_args(roots))
    assert "[UNKNOWN] conntrack-max" in explain.stdout
    assert "net.netfilter.nf_conntrack_max: - (not assessed)" in explain.stdout
    assert explain.returncode == 3


def test_a_value_beyond_the_kernels_type_is_an_error(tree):
    roots = tree("defaults-16g")
    path = roots.procfs / NF / "nf_conntrack_buckets"
    path.write_text(f"{2**31}\n")
    proc, report = _audit_json(roots)
    assert proc.stderr == (f"ct-tune: {path}: 2147483648 is above 2,147,483,647: not a valid "
                           "hash bucket count\n")
    assert _by_rule(report)["hash-buckets"]["severity"] == "unknown"


@pytest.mark.parametrize("content", [None, "garbage\n", "", "\x00\x01\n"])
def test_stat_missing_or_corrupt_makes_the_drop_rules_unknown_not_no_drops(tree, content):
    roots = tree("defaults-16g")
    path = roots.procfs / "net/stat/nf_conntrack"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    proc, report = _audit_json(roots)
    assert proc.returncode == 3 and report["status"] == "unknown"
    f = _by_rule(report)
    for rule in ("table-drops", "insert-races"):
        assert f[rule]["severity"] == "unknown", rule
        assert any(str(path) in w for w in f[rule]["unavailable"])
    assert "no connection refused" not in proc.stdout
    table = run_cli("audit", *tree_args(roots))
    assert table.returncode == 3
    assert table.stdout.splitlines()[-1].startswith("status: UNKNOWN")


def test_critical_outranks_unknown(tree):
    """A host with a critical finding still pages as critical when the counters are gone."""
    roots = tree("nearly-full-drops")
    (roots.procfs / "net/stat/nf_conntrack").unlink()
    proc, report = _audit_json(roots)
    assert report["status"] == "critical" and proc.returncode == 2
    f = _by_rule(report)
    assert f["table-drops"]["severity"] == "unknown"
    assert f["conntrack-max"]["severity"] == "critical"


def test_module_not_loaded_without_counters_is_not_unknown(tree):
    """No nf_conntrack, no counters table: nothing is missing."""
    proc, report = _audit_json(tree("module-not-loaded"))
    assert proc.stderr == ""
    assert all(f["severity"] != "unknown" for f in report["findings"])
    assert report["errors"] == []


def test_collect_records_the_problems_and_the_snapshot_audit_reports_them(tree, tmp_path):
    roots = tree("defaults-16g")
    path = roots.procfs / NF / "nf_conntrack_max"
    path.write_text("26214x4\n")
    out = tmp_path / "host.json"
    proc = run_cli("collect", "-o", str(out), *tree_args(roots))
    assert proc.returncode == 0
    assert proc.stderr == f"ct-tune: {path}: expected an integer, found '26214x4'\n"
    data = json.loads(out.read_text())
    assert data["errors"] == [{"path": str(path),
                               "problem": "expected an integer, found '26214x4'",
                               "facts": [["sysctl", "net.netfilter.nf_conntrack_max"]]}]
    audit = run_cli("audit", "--format", "json", "--facts", str(out))
    assert audit.returncode == 3
    assert audit.stderr == proc.stderr
    assert _by_rule(json.loads(audit.stdout))["conntrack-max"]["severity"] == "unknown"


# -- snapshots -----------------------------------------------------------------------------

@pytest.fixture
def snapshot(tree):
    return json.loads(run_cli("collect", *tree_args(tree("defaults-16g"))).stdout)


def _audit_snapshot(tmp_path, data, raw: str | None = None):
    path = tmp_path / "host.json"
    path.write_text(raw if raw is not None else json.dumps(data))
    return path, run_cli("audit", "--facts", str(path))


FLOWS_CLASS = {"entries": 5, "margin": 0, "timeout_key": "net.netfilter.x", "timeout": 60,
               "idle_bin_seconds": 1, "idle_histogram": {"0": 5}, "idle_ports": [{"80": 5}]}


@pytest.mark.parametrize(("mutate", "field", "problem"), [
    (lambda d: d.update(flows=[1, 2]), "flows", "expected an object, found a list"),
    (lambda d: d.update(flows={"source": "x"}), "flows", "missing field 'entries_read'"),
    (lambda d: d.update(flows={"source": "x", "entries_read": 1, "entries_estimated": 1,
                               "sampled": False, "malformed": 0, "by_l3": {}, "by_l4": {},
                               "by_flag": {}, "top_dports": [],
                               "classes": {"tcp/X": {**FLOWS_CLASS, "idle_histogram": []}}}),
     "flows.classes.tcp/X.idle_histogram", "expected an object, found a list"),
    (lambda d: d.update(flows={"source": "x", "entries_read": 1, "entries_estimated": 1,
                               "sampled": False, "malformed": 0, "by_l3": {}, "by_l4": {},
                               "by_flag": {}, "top_dports": [],
                               "classes": {"tcp/X": {**FLOWS_CLASS, "timeout": 10**9}}}),
     "flows.classes.tcp/X",
     "idle_bin_seconds is too small for its timeout (more than 1025 bins)"),
    (lambda d: d.update(window={"seconds": "10"}), "window.seconds",
     'expected integer or number, found "10"'),
    (lambda d: d.update(window={"seconds": 1, "polls": 1, "peak": None, "mean": None,
                                "growth": None, "rates": {"drop_per_s": "fast"}}),
     "window.rates.drop_per_s", 'expected integer or number, found "fast"'),
    (lambda d: d["persist"].update(assignments=[{"key": 1}]), "persist.assignments[0].key",
     "expected string, found 1"),
    (lambda d: d["persist"].update(sysctl=[]), "persist.sysctl",
     "expected an object, found a list"),
    (lambda d: d["persist"].update(early_load="modules"), "persist.early_load",
     'expected a list, found "modules"'),
    (lambda d: d.update(host=[]), "host", "expected an object, found a list"),
    (lambda d: d["host"].update(cpus_online=-1), "host.cpus_online", "-1 is outside 1..65536"),
    (lambda d: d["sysctl"]["net.netfilter.nf_conntrack_max"].update(value="262144"),
     "sysctl.net.netfilter.nf_conntrack_max.value", 'expected integer, found "262144"'),
    (lambda d: d["sysctl"]["net.netfilter.nf_conntrack_max"].update(value=[262144]),
     "sysctl.net.netfilter.nf_conntrack_max.value", "expected integer, found a list"),
    (lambda d: d["sysctl"].update({"net.netfilter.nf_conntrack_max": 5}),
     "sysctl.net.netfilter.nf_conntrack_max", "expected an object, found 5"),
    (lambda d: d["stat"]["counters"].update(drop=-1), "stat.counters.drop",
     "-1 is outside 0..9223372036854775807"),
    (lambda d: d.update(errors=[{"path": 1}]), "errors[0].path", "expected string, found 1"),
])
def test_malformed_snapshot_field_is_exit_3_naming_it(snapshot, tmp_path, mutate, field,
                                                      problem):
    mutate(snapshot)
    path, proc = _audit_snapshot(tmp_path, snapshot)
    assert proc.returncode == 3 and proc.stdout == ""
    assert f"ct-tune: {path}: {field}: {problem}\n" in proc.stderr
    assert "internal error" not in proc.stderr


@pytest.mark.parametrize(("token", "field", "problem"), [
    ("NaN", "host.uptime_seconds", "expected integer or null, found nan"),
    ("Infinity", "host.uptime_seconds", "expected integer or null, found inf"),
    ("1e400", "host.uptime_seconds", "expected integer or null, found inf"),
    ("9" * 5000, "host.uptime_seconds", "expected integer or null, found a number of 5000 "
                                        "digits"),
])
def test_nan_inf_and_huge_numbers_in_a_snapshot_name_the_field(snapshot, tmp_path, token,
                                                               field, problem):
    snapshot["host"]["uptime_seconds"] = "@@"
    raw = json.dumps(snapshot).replace('"@@"', token)
    path, proc = _audit_snapshot(tmp_path, None, raw)
    assert proc.returncode == 3
    assert proc.stderr == f"ct-tune: {path}: {field}: {problem}\n"


@pytest.mark.parametrize(("token", "found"), [("7" * 5000, "a number of 5000 digits"),
                                              ("NaN", "nan"), ("-Infinity", "-inf"),
                                              ("2.5", "2.5"), ("true", "true")])
def test_huge_or_not_integer_sysctl_value_in_a_snapshot_names_the_field(snapshot, tmp_path,
                                                                        token, found):
    snapshot["sysctl"]["net.netfilter.nf_conntrack_max"]["value"] = "@@"
    raw = json.dumps(snapshot).replace('"@@"', token)
    path, proc = _audit_snapshot(tmp_path, None, raw)
    assert proc.returncode == 3
    assert proc.stderr == (f"ct-tune: {path}: sysctl.net.netfilter.nf_conntrack_max.value: "
                           f"expected integer, found {found}\n")


def test_every_snapshot_problem_is_listed(snapshot, tmp_path):
    snapshot["host"]["mem_total_bytes"] = "16G"
    snapshot["conntrack"].pop("loaded")
    snapshot["window"] = {"seconds": float("nan"), "polls": 1, "peak": None, "mean": None,
                          "growth": None, "rates": {}}
    path, proc = _audit_snapshot(tmp_path, None, json.dumps(snapshot))
    assert proc.returncode == 3
    assert proc.stderr.splitlines() == [
        f'ct-tune: {path}: host.mem_total_bytes: expected integer or null, found "16G"',
        f"ct-tune: {path}: conntrack: missing field 'loaded'",
        f"ct-tune: {path}: window.seconds: expected a finite number, found nan",
    ]


def test_out_of_range_sysctl_in_a_snapshot_is_an_error_and_missing(snapshot, tmp_path):
    snapshot["sysctl"]["net.netfilter.nf_conntrack_max"]["value"] = -5
    path, proc = _audit_snapshot(tmp_path, snapshot)
    assert proc.stderr == (f"ct-tune: {path}: sysctl.net.netfilter.nf_conntrack_max.value: "
                           "-5 is below 0: not a valid entry count (int, 0 means unlimited "
                           "for max)\n")
    assert proc.returncode == 3
    assert "conntrack-max.toml" not in proc.stderr
    assert "status: UNKNOWN" in proc.stdout


@pytest.mark.parametrize("raw", ["[" * 100000 + "]" * 100000,
                                 '{"a":' * 100000 + "1" + "}" * 100000])
def test_deeply_nested_snapshot_is_exit_3(tmp_path, raw):
    path, proc = _audit_snapshot(tmp_path, None, raw)
    assert proc.returncode == 3
    assert proc.stderr == f"ct-tune: {path}: invalid snapshot: nested too deeply\n"


RULE = """
id = "{rid}"
title = "t"
sources = ["x"]
explanation = "e"
[let]
v = "{expr}"
[[severity]]
level = "ok"
summary = "fine"
"""


def test_a_broken_rule_is_still_the_rule_files_fault_next_to_a_corrupt_input(tree, tmp_path):
    roots = tree("defaults-16g")
    (roots.procfs / NF / "nf_conntrack_udp_timeout").write_text("30s\n")
    rules = tmp_path / "rules"
    rules.mkdir()
    # reads a good fact and fails: the rule's fault, whatever else is corrupt
    (rules / "broken.toml").write_text(RULE.format(rid="broken",
                                                   expr="sysctl.nf_conntrack_max / 0"))
    proc = run_cli("audit", *tree_args(roots), "--rules-dir", str(rules))
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1].startswith(f"ct-tune: {rules / 'broken.toml'}: broken: ")
    # the same arithmetic on the corrupt value: unknown, blamed on the proc file
    (rules / "broken.toml").write_text(RULE.format(
        rid="broken", expr="sysctl.nf_conntrack_udp_timeout * 2"))
    proc, report = _audit_json(roots, "--rules-dir", str(rules))
    finding = _by_rule(report)["broken"]
    assert finding["severity"] == "unknown"
    assert finding["unavailable"] == [
        f"{roots.procfs / NF / 'nf_conntrack_udp_timeout'}: expected an integer, found '30s'"]
    assert "broken.toml" not in proc.stderr


def test_apply_refuses_a_host_it_could_not_read_whole(tree, tmp_path):
    roots = tree("defaults-16g")
    path = roots.procfs / NF / "nf_conntrack_max"
    path.write_text("-5\n")
    proc = run_cli("apply", "--dry-run", "--no-live", "--root", str(tmp_path / "scratch"),
                   *tree_args(roots))
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"ct-tune: {path}: -5 is below 0")
    assert "nothing to apply" not in proc.stdout


def test_conntrack_keys_without_nf_conntrack_max_are_an_incomplete_tree_not_a_green(tree):
    """Every nf_conntrack_* key is registered with nf_conntrack_max: a tree that has the
    others but not it lost files, and must not read as "module not loaded, OK"."""
    roots = tree("defaults-16g")
    (roots.procfs / NF / "nf_conntrack_max").unlink()
    (roots.procfs / "sys/net/nf_conntrack_max").unlink()
    proc, report = _audit_json(roots, "--no-sample")
    assert proc.returncode == 3
    assert report["status"] == "unknown"
    assert "module-loaded" not in _by_rule(report)
    assert f"{roots.procfs / NF / 'nf_conntrack_max'}: missing while" in proc.stderr
    assert _by_rule(report)["conntrack-max"]["severity"] == "unknown"


def test_a_fifo_as_the_builtin_marker_is_an_input_problem_not_a_crash(tree):
    """A replayed tree's built-in marker is input like any other: a FIFO there must not
    hang or end the audit; it is named, and the module's build is unknown."""
    import os

    from ct_tune import facts

    roots = tree("defaults-16g")
    marker = roots.sysfs / facts.BUILTIN_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    (marker.parent / "initstate").unlink(missing_ok=True)
    os.mkfifo(marker)
    proc, report = _audit_json(roots, "--no-sample")
    assert proc.returncode == 3, proc.stderr
    assert f"ct-tune: {marker}: not a regular file (FIFO)" in proc.stderr.splitlines()
    assert report["facts"]["conntrack"]["builtin"] is None
