"""collect -> audit --facts: a fleet collects, one machine audits; snapshots are validated."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, tree_args


def test_offline_audit_of_a_snapshot_matches_the_live_audit(tree, tmp_path):
    roots = tree("nearly-full-drops")
    out = tmp_path / "facts.json"
    assert run_cli("collect", "-o", str(out), *tree_args(roots)).returncode == 0
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    live = run_cli("audit", "--format", "json", *tree_args(roots))
    offline = run_cli("audit", "--format", "json", "--facts", str(out))
    assert offline.returncode == live.returncode == 2
    # the whole finding, explanation (uptime, drops per day) included: a captured tree
    # keeps the uptime it was captured at, so replaying it later changes nothing
    assert json.loads(offline.stdout)["findings"] == json.loads(live.stdout)["findings"]
    drops = next(f for f in json.loads(live.stdout)["findings"] if f["rule"] == "table-drops")
    assert drops["evidence"]["uptime_days"] == round(7691 / 86400, 6)


def test_collect_to_stdout_is_versioned_json(tree):
    data = json.loads(run_cli("collect", *tree_args(tree("defaults-16g"))).stdout)
    assert data["schema"] == "ct-tune/facts" and data["schema_version"] == 2
    assert data["sysctl"]["net.netfilter.nf_conntrack_max"] == {"value": 262144,
                                                                "writable": True}
    # unknown and multi-field keys are kept (nf_log is a directory of per-family files)
    assert "net.netfilter.nf_log.2" in data["sysctl"]
    assert data["host"]["cpus_online"] == 8


@pytest.mark.parametrize(("mutate", "problem"), [
    (lambda d: d.update(schema_version=99), "facts schema_version 99 is not supported"),
    (lambda d: d.update(schema="other"), "not a ct-tune facts snapshot"),
    (lambda d: d["host"].update(mem_total_bytes="16G"),
     "host.mem_total_bytes: expected integer or null, found \"16G\""),
    (lambda d: d["conntrack"].pop("loaded"), "conntrack: missing field 'loaded'"),
    (lambda d: d["sysctl"]["net.netfilter.nf_conntrack_max"].update(writable="yes"),
     "sysctl.net.netfilter.nf_conntrack_max.writable: expected boolean"),
])
def test_invalid_snapshot_is_one_line_exit_3(tree, tmp_path, mutate, problem):
    data = json.loads(run_cli("collect", *tree_args(tree("defaults-16g"))).stdout)
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    proc = run_cli("audit", "--facts", str(path))
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith(f"ct-tune: {path}: ")
    assert problem in proc.stderr


def test_truncated_snapshot(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"schema": "ct-tune/facts", "sche')
    proc = run_cli("audit", "--facts", str(path))
    assert proc.returncode == 3
    assert "invalid JSON at line 1" in proc.stderr
