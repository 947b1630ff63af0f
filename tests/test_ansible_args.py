"""The collection's option -> ct-tune argument mapping and result shaping, without Ansible.

module_utils/cttune.py imports nothing from Ansible, so its pure functions are loaded from
the file and checked here in milliseconds; the same arguments are then run through the real
CLI once, so an option the CLI does not know fails here, not on a fleet."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import ROOT, run_cli

UTILS = ROOT / "ansible_collections/ct_tune/conntrack/plugins/module_utils/cttune.py"


@pytest.fixture(scope="module")
def cttune():
    spec = importlib.util.spec_from_file_location("cttune_module_utils", UTILS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_apply_options_map_to_apply_and_check_mode_to_dry_run(cttune):
    params = {"state": "present", "profile": "k8s-node", "root": "/srv/r", "live": False,
              "allow_lower": True, "name": "98-ct.conf", "rules_dirs": ["/a", "/b"],
              "builtin_rules": True, "sample": False, "sample_limit": None, "lock_wait": 5.0,
              "procfs": None, "sysfs": None}
    assert cttune.apply_args(params, check_mode=False) == [
        "apply", "--format", "json", "--profile", "k8s-node", "--rules-dir", "/a",
        "--rules-dir", "/b", "--root", "/srv/r", "--no-live", "--allow-lower", "--name",
        "98-ct.conf", "--no-sample", "--lock-wait", "5"]
    assert cttune.apply_args(params, check_mode=True)[-1] == "--dry-run"
    # the defaults add nothing the CLI would not assume anyway
    assert cttune.apply_args({"live": True, "allow_lower": False, "sample": True},
                             check_mode=False) == ["apply", "--format", "json", "--profile",
                                                   "default"]
    assert cttune.apply_args({"lock_wait": 0.5, "builtin_rules": False}, False)[-3:] == [
        "--no-builtin-rules", "--lock-wait", "0.5"]


def test_rolled_back_maps_to_rollback_with_only_its_options(cttune):
    params = {"state": "rolled_back", "profile": "k8s-node", "root": "/srv/r", "live": False,
              "allow_lower": True, "name": "x.conf", "lock_wait": 2, "procfs": "/p"}
    assert cttune.apply_args(params, check_mode=True) == [
        "rollback", "--format", "json", "--root", "/srv/r", "--procfs", "/p",
        "--lock-wait", "2", "--dry-run"]


def test_audit_and_collect_options(cttune):
    assert cttune.audit_args({"profile": "nat-gateway", "facts": "/s.json", "sample": False,
                              "procfs": "/p", "sysfs": "/s", "root": "/r"}) == [
        "audit", "--format", "json", "--profile", "nat-gateway", "--procfs", "/p",
        "--sysfs", "/s", "--root", "/r", "--facts", "/s.json", "--no-sample"]
    assert cttune.collect_args({"sample": True, "sample_limit": 1000}, "/o.json") == [
        "collect", "-o", "/o.json", "--sample-limit", "1000"]


def test_fail_on_order(cttune):
    at = cttune.status_at_least
    assert at("critical", "warning") and at("warning", "warning") and at("warning", "unknown")
    assert not at("unknown", "warning") and not at("ok", "unknown")
    assert not at("critical", "none") and not at("critical", None)


def test_diff_lists_changed_files_and_live_values_only(cttune):
    doc = {"procfs": "/proc", "files": [
        {"path": "/etc/sysctl.d/99-ct-tune.conf", "action": "create", "before": None,
         "after": "a = 1\n"},
        {"path": "/etc/modprobe.d/ct-tune.conf", "action": "remove", "before": "x\n",
         "after": None},
        {"path": "/etc/modules-load.d/ct-tune.conf", "action": "unchanged", "before": None,
         "after": None}],
        "live_values": [{"key": "k1", "before": "5", "after": "6", "changed": True},
                        {"key": "k2", "before": "7", "after": "7", "changed": False}]}
    assert cttune.diff_of(doc) == [
        {"before_header": "/etc/sysctl.d/99-ct-tune.conf (absent)",
         "after_header": "/etc/sysctl.d/99-ct-tune.conf", "before": "", "after": "a = 1\n"},
        {"before_header": "/etc/modprobe.d/ct-tune.conf",
         "after_header": "/etc/modprobe.d/ct-tune.conf (removed)", "before": "x\n",
         "after": ""},
        {"before_header": "live values (/proc/sys)", "after_header": "live values (/proc/sys)",
         "before": "k1 = 5\n", "after": "k1 = 6\n"}]


def test_the_mapped_arguments_run_in_the_real_cli(cttune, tree, tmp_path):
    """Every option the modules pass exists in the CLI and gives the JSON they read."""
    roots = tree("defaults-16g")
    base = {"procfs": str(roots.procfs), "sysfs": str(roots.sysfs), "sample": False,
            "rules_dirs": [str(tmp_path / "rules")], "sample_limit": 10}
    (tmp_path / "rules").mkdir()
    audit = run_cli(*cttune.audit_args({**base, "profile": "default"}))
    report = json.loads(audit.stdout)
    summary = cttune.facts_summary(report)
    assert summary["max"] == 262144 and summary["count"] == 1234
    assert summary["usage"] == round(1234 / 262144, 6)
    apply = run_cli(*cttune.apply_args({**base, "root": str(tmp_path / "r"), "live": True,
                                        "allow_lower": True, "name": "97-x.conf",
                                        "lock_wait": 1}, check_mode=True))
    assert apply.returncode == 0, apply.stderr
    assert json.loads(apply.stdout)["changed"] is True
    out = tmp_path / "snap.json"
    collect = run_cli(*cttune.collect_args(base, str(out)))
    assert collect.returncode == 0, collect.stderr
    assert json.loads(out.read_text())["schema"] == "ct-tune/facts"
