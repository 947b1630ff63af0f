"""Inputs benchmarks/fuzz.py found after the issue-9 branches were merged (seed 7): each
one read as green or as an internal error."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, tree_args

from ct_tune import apply


def shipped_rule_with(tmp_path: Path, rule_id: str, key: str, source: str) -> Path:
    """A copy of a shipped rule, in a directory of its own, with one top-level key's
    expression replaced."""
    text = (Path(__file__).parent.parent / "rules" / f"{rule_id}.toml").read_text()
    start = text.index(f"\n{key} = ")
    end = text.index("\n", start + 1)
    path = tmp_path / "rules" / f"{rule_id}.toml"
    path.parent.mkdir()
    path.write_text(f"{text[:start]}\n{key} = {json.dumps(source)}{text[end:]}")
    return path


def test_a_directory_in_place_of_a_timeout_key_is_reported_not_absent(tree):
    roots = tree("defaults-16g")
    key = roots.proc("sys/net/netfilter/nf_conntrack_icmpv6_timeout")
    key.unlink()
    key.mkdir()
    proc = run_cli("audit", "--no-sample", *tree_args(roots))
    assert proc.returncode == 3, proc.stdout
    assert f"ct-tune: {key}: not a regular file (directory)\n" in proc.stderr


def test_an_infinite_number_in_a_rule_is_the_rule_files_fault(tmp_path, tree):
    roots = tree("defaults-16g")
    rules = shipped_rule_with(tmp_path, "conntrack-early-load", "when", "1e400").parent
    proc = run_cli("audit", "--no-sample", *tree_args(roots), "--rules-dir", str(rules))
    assert proc.returncode == 3
    assert "internal error" not in proc.stderr
    assert f"{rules / 'conntrack-early-load.toml'}: conntrack-early-load: " in proc.stderr
    assert "number out of range" in proc.stderr


def test_a_state_whose_live_path_is_not_the_keys_file_is_refused(tmp_path):
    state = tmp_path / apply.STATE_DIR
    state.mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    (state / apply.STATE_FILE).write_text(json.dumps({
        "version": apply.STATE_VERSION, "procfs": "/proc", "files": [],
        "live": [{"key": "net.netfilter.nf_conntrack_tcp_timeout_established",
                  "value": "432000", "path": str(outside)}]}))
    proc = run_cli("rollback", "--dry-run", "--root", str(tmp_path))
    assert proc.returncode == 3, proc.stdout
    assert "live[0].path" in proc.stderr and "nothing was restored" in proc.stderr
    assert not outside.exists()


def test_an_empty_recommended_expression_is_a_rule_error(tmp_path, tree):
    """seed 11: `recommended = ""` dropped the recommendation, and the audit read OK."""
    roots = tree("defaults-16g")
    path = shipped_rule_with(tmp_path, "udp-timeout-stream", "recommended", "")
    proc = run_cli("audit", "--no-sample", *tree_args(roots), "--rules-dir", str(path.parent))
    assert proc.returncode == 3
    assert proc.stderr == (f"ct-tune: {path}: udp-timeout-stream: 'recommended' must be a "
                           "non-empty expression string\n")


def test_a_plus_signed_timeout_is_corrupt_not_a_number(tree):
    """seed 13: '+7' read as 7; the kernel never prints a plus sign, nor reads one back."""
    roots = tree("defaults-16g")
    key = roots.proc("sys/net/netfilter/nf_conntrack_tcp_timeout_unacknowledged")
    key.write_text("+7\n")
    proc = run_cli("audit", "--no-sample", *tree_args(roots))
    assert proc.returncode == 3, proc.stdout
    assert f"ct-tune: {key}: expected an integer, found '+7'\n" in proc.stderr
