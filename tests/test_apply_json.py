"""apply / rollback --format json: what configuration management (the Ansible collection)
reads instead of the text: changed, files before/after, live values, skips, state file, and
a failure as error.reason.  Against captured hosts: the tree's /proc/sys files stand in for
the live values and a scratch --root receives the files."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, tree_args

EST = "net.netfilter.nf_conntrack_tcp_timeout_established"


def apply_json(*args: str, **kw) -> tuple[int, dict]:
    proc = run_cli(*args, "--format", "json", **kw)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def files_under(*dirs: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: a run that changes nothing leaves both alone."""
    out = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def test_dry_run_reports_the_changes_and_writes_nothing(tree, tmp_path):
    roots = tree("defaults-16g")
    root = tmp_path / "root"
    before = files_under(roots.procfs)
    code, doc = apply_json("apply", *tree_args(roots), "--root", str(root), "--no-sample",
                           "--dry-run")
    assert code == 0
    assert (doc["schema"], doc["schema_version"]) == ("ct-tune/apply", 1) and doc["dry_run"] is True
    assert doc["changed"] is True and doc["error"] is None and doc["state_file"] is None
    sysctl = next(f for f in doc["files"] if f["path"].endswith("etc/sysctl.d/99-ct-tune.conf"))
    assert sysctl["action"] == "create" and sysctl["before"] is None
    assert f"\n{EST} = 86400\n" in sysctl["after"]
    assert sysctl["after_sha256"] == hashlib.sha256(sysctl["after"].encode()).hexdigest()
    est = next(v for v in doc["live_values"] if v["key"] == EST)
    assert (est["before"], est["after"], est["changed"]) == ("432000", "86400", True)
    assert not root.exists()
    assert files_under(roots.procfs) == before


def test_second_apply_changes_nothing_and_leaves_every_file_byte_identical(tree, tmp_path):
    roots = tree("defaults-16g")
    root = tmp_path / "root"
    args = ("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    code, first = apply_json(*args)
    assert code == 0 and first["changed"] is True
    state = Path(first["state_file"])
    assert state == root / "var/lib/ct-tune/rollback.json" and state.is_file()
    written = {f["path"]: f["after"] for f in first["files"]}
    for path, text in written.items():
        assert Path(path).read_text() == text
    est = roots.procfs / "sys/net/netfilter/nf_conntrack_tcp_timeout_established"
    assert est.read_text().strip() == "86400"

    after_first = files_under(root, roots.procfs)
    code, second = apply_json(*args)
    assert code == 0
    assert second["changed"] is False and second["state_file"] is None
    assert {f["action"] for f in second["files"]} == {"unchanged"}
    assert all(not v["changed"] for v in second["live_values"])
    # not a byte, not an mtime: no date refreshed in a fragment, no state rewritten
    assert files_under(root, roots.procfs) == after_first
    # and its dry run predicts exactly that
    code, dry = apply_json(*args, "--dry-run")
    assert (code, dry["changed"]) == (0, False)


def test_rollback_json_restores_and_names_the_states(tree, tmp_path):
    roots = tree("defaults-16g")
    root = tmp_path / "root"
    code, applied = apply_json("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    assert code == 0
    code, dry = apply_json("rollback", "--root", str(root), "--dry-run")
    assert code == 0 and dry["changed"] is True and dry["command"] == "rollback"
    assert dry["restored_from"] == applied["state_file"]
    assert {f["action"] for f in dry["files"]} == {"remove"}
    code, done = apply_json("rollback", "--root", str(root))
    assert code == 0 and done["changed"] is True
    assert Path(done["state_file"]).name.startswith("rolled-back-")
    assert not (root / "etc/sysctl.d/99-ct-tune.conf").exists()
    assert (roots.procfs / "sys/net/netfilter/nf_conntrack_tcp_timeout_established"
            ).read_text().strip() == "432000"
    code, again = apply_json("rollback", "--root", str(root))
    assert code == 3 and again["error"]["reason"] == "no-state"


def test_skips_carry_a_kind(tree, tmp_path):
    roots = tree("tiny-memory-huge-max")
    code, doc = apply_json("apply", *tree_args(roots), "--root", str(tmp_path / "r"),
                           "--no-sample", "--dry-run")
    assert code == 0
    skip = next(s for s in doc["skipped"] if s["key"] == "net.netfilter.nf_conntrack_max")
    assert skip["kind"] == "not-lowered" and "--allow-lower" in skip["reason"]
    assert (skip["current"], skip["recommended"]) == (2000000, 96768)


def test_busy_is_exit_4_and_reason_busy(tree, tmp_path):
    roots = tree("defaults-16g")
    root = tmp_path / "root"
    lock = root / "var/lib/ct-tune/lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, doc = apply_json("apply", *tree_args(roots), "--root", str(root), "--no-sample",
                               "--lock-wait", "0")
    assert code == 4
    assert doc["error"]["reason"] == "busy" and doc["error"]["exit_code"] == 4
    assert doc["changed"] is False and "another ct-tune apply" in doc["error"]["message"]


def test_not_root_is_reason_not_root(tmp_path, request):
    args = ["apply", "--root", str(tmp_path / "r"), "--no-sample"]  # live values on /proc
    if os.geteuid() != 0:
        code, doc = apply_json(*args)
    else:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (util-linux) to run unprivileged")
        # a copy nobody can read: the checkout may sit in root's 0700 mktemp directory
        python = request.getfixturevalue("unprivileged_python")
        proc = subprocess.run(
            [*python, "-m", "ct_tune", *args, "--format", "json"],
            capture_output=True, text=True, cwd="/", timeout=120,
            env={**os.environ, "CT_TUNE_CACHE_DIR": "off"})
        code, doc = proc.returncode, json.loads(proc.stdout or "null")
        assert doc is not None, proc.stderr
    assert code == 3 and doc["error"]["reason"] == "not-root"
    assert not (tmp_path / "r").exists()


def test_read_only_root_is_reason_read_only(tree, tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private read-only bind mount")
    roots = tree("defaults-16g")
    root = tmp_path / "root"
    root.mkdir()
    ct = f"{ROOT / '.venv/bin/python' if (ROOT / '.venv/bin/python').exists() else 'python3'}"
    script = (f"mount --bind {root} {root} && mount -o remount,ro,bind {root} && "
              f"{ct} -m ct_tune apply --procfs {roots.procfs} --sysfs {roots.sysfs} "
              f"--root {root} --no-sample --format json")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    doc = json.loads(proc.stdout)
    assert proc.returncode == 3, proc.stderr
    assert doc["error"]["reason"] == "read-only", doc["error"]
    assert doc["changed"] is False


def test_no_live_in_a_namespace_is_reason_namespace(tree):
    roots = tree("netns-exec")
    code, doc = apply_json("apply", *tree_args(roots), "--no-live", "--no-sample")
    assert code == 3 and doc["error"]["reason"] == "namespace"


def test_live_only_in_a_namespace_says_not_persisted(tree):
    roots = tree("netns-exec")
    code, doc = apply_json("apply", *tree_args(roots), "--no-sample", "--dry-run")
    assert code == 0 and doc["persist"] is False and doc["files"] == []
    assert any("not persisted" in n for n in doc["notes"])


def test_unreadable_host_is_reason_bad_input(tree, tmp_path):
    roots = tree("corrupt-values")
    code, doc = apply_json("apply", *tree_args(roots), "--root", str(tmp_path / "r"),
                           "--no-sample", "--dry-run")
    assert code == 3 and doc["error"]["reason"] == "bad-input"
    assert doc["input_errors"] and doc["changed"] is False


def test_interrupted_apply_is_reason_interrupted(tree, tmp_path):
    roots = tree("defaults-16g")
    root = tmp_path / "root"
    (root / "var/lib/ct-tune").mkdir(parents=True)
    (root / "var/lib/ct-tune/pending.json").write_text("{}")
    code, dry = apply_json("apply", *tree_args(roots), "--root", str(root), "--no-sample",
                           "--dry-run")
    assert code == 0 and dry["changed"] is True
    assert any("interrupted" in w for w in dry["warnings"])  # the check mode warns
    code, doc = apply_json("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    assert code == 3 and doc["error"]["reason"] == "interrupted"
    # it had planned the changes: the document still shows them, none done
    assert doc["files"] and doc["changed"] is False
