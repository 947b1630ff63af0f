"""apply and rollback write only under --root, and only what ct-tune writes.

Scratch roots with hostile links and hostile state files; live values go to a captured
procfs tree (--procfs), so nothing here touches the running kernel.  Tests of the
recorded procfs, which need the default /proc, run inside a network namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli, tree_args
from netns import namespace, read_sysctl
from treesnap import snapshot

UDP = "net.netfilter.nf_conntrack_udp_timeout"
EST = "net.netfilter.nf_conntrack_tcp_timeout_established"
MAX = "net.netfilter.nf_conntrack_max"
FRAGMENT = "etc/sysctl.d/99-ct-tune.conf"
STATE = "var/lib/ct-tune/rollback.json"


def live(procfs: Path, key: str) -> str:
    return (procfs / "sys" / key.replace(".", "/")).read_text().strip()


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "\n" not in err and err.startswith("ct-tune: "), err
    assert "internal error" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def scratch(tree, tmp_path):
    """(roots of a captured host, an empty --root, a sentinel directory beside it)."""
    roots = tree("nearly-full-drops")
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "keep.conf").write_text("net.netfilter.nf_conntrack_max = 1\n")
    return roots, root, outside


@pytest.mark.parametrize("link", ["etc/sysctl.d", "var/lib/ct-tune"])
def test_a_symlinked_directory_leading_out_of_the_root_is_refused(scratch, link):
    roots, root, outside = scratch
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(outside)
    before, values = snapshot(outside), live(roots.procfs, MAX)
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    err = one_line_error(proc)
    assert f"{root / link}: is a symbolic link" in err
    assert snapshot(outside) == before
    assert live(roots.procfs, MAX) == values


def test_a_symlinked_directory_inside_the_root_is_refused_too(scratch):
    roots, root, _ = scratch
    (root / "etc/real.d").mkdir(parents=True)
    (root / "etc/sysctl.d").symlink_to("real.d")
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    assert f"{root}/etc/sysctl.d: is a symbolic link" in one_line_error(proc)
    assert list((root / "etc/real.d").iterdir()) == []


def test_the_debian_99_sysctl_link_is_never_replaced(scratch):
    """--name 99-sysctl.conf names the admin's link to /etc/sysctl.conf: ct-tune refuses
    it rather than replace the link with a regular file (which rollback could not put
    back as the link it was)."""
    roots, root, _ = scratch
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/sysctl.conf").write_text("# admin\nvm.swappiness = 10\n")
    (root / "etc/sysctl.d/99-sysctl.conf").symlink_to("../sysctl.conf")
    before = snapshot(root)
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample",
                   "--no-live", "--name", "99-sysctl.conf")
    err = one_line_error(proc)
    assert f"{root}/etc/sysctl.d/99-sysctl.conf: is a symbolic link" in err
    run_cli("rollback", "--root", str(root))
    assert os.readlink(root / "etc/sysctl.d/99-sysctl.conf") == "../sysctl.conf"
    assert snapshot(root, skip=("var",)) == before


def test_a_device_where_the_fragment_goes_is_refused(scratch):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a device node")
    roots, root, _ = scratch
    (root / "etc/sysctl.d").mkdir(parents=True)
    os.mknod(root / FRAGMENT, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    assert f"{root / FRAGMENT}: not a regular file" in one_line_error(proc)


def applied(roots, root) -> dict:
    """Apply to the scratch root and captured tree; returns its state file."""
    (root / "etc/sysctl.d").mkdir(parents=True, exist_ok=True)
    (root / FRAGMENT).write_text("# mine\nnet.netfilter.nf_conntrack_udp_timeout = 45\n")
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    assert proc.returncode == 0, proc.stderr
    return json.loads((root / STATE).read_text())


HOSTILE_FILES = [
    {"path": "../outside/keep.conf", "content": "x = 1\n"},
    {"path": "{outside}/keep.conf", "content": None},  # absolute
    {"path": "etc/sysctl.d/../../../outside/keep.conf", "content": "x\n"},
    {"path": "etc/passwd", "content": "root::0:0::/:/bin/sh\n"},
    {"path": "etc/sysctl.d/.hidden.conf", "content": None},
]
HOSTILE_LIVE = [
    {"key": "{outside}/keep.conf", "value": "1"},  # absolute
    {"key": "kernel.core_pattern", "value": "1"},
    {"key": "net.netfilter.nf_conntrack_../../../outside/x", "value": "1"},
    {"key": MAX, "value": 30},
    {"key": MAX, "value": "0x3c"},
]


def test_a_state_naming_paths_or_keys_ct_tune_does_not_write_restores_nothing(scratch):
    roots, root, outside = scratch
    doc = applied(roots, root)
    nfiles, nlive = len(doc["files"]), len(doc["live"])
    doc["files"] += [*HOSTILE_FILES, {"path": "etc/modprobe.d/ct-tune.conf",
                                      "content": ["a", "list"]}]
    doc["live"] += HOSTILE_LIVE
    text = json.dumps(doc).replace("{outside}", str(outside))
    # the path saved beside a key is never used: it is derived from the key
    text = text.replace('"key": "' + EST + '"', '"key": "' + EST + '", "path": "'
                        + str(outside / "keep.conf") + '"')
    (root / STATE).write_text(text)
    before, tree = snapshot(outside), snapshot(roots.procfs.parent)
    files = snapshot(root / "etc")
    proc = run_cli("rollback", "--root", str(root))
    err = one_line_error(proc)
    assert "not a valid ct-tune rollback state, nothing was restored" in err
    # every problem is listed, each at its place
    for i in range(len(HOSTILE_FILES)):
        assert f"files[{nfiles + i}].path: " in err
    assert (f"files[{nfiles + len(HOSTILE_FILES)}].content: expected a string or null, "
            "found array") in err
    for i in range(3):
        assert f"live[{nlive + i}].key: " in err
    for i in range(3, 5):
        assert f"live[{nlive + i}].value: " in err
    assert snapshot(outside) == before
    assert snapshot(roots.procfs.parent) == tree
    assert snapshot(root / "etc") == files
    assert (root / STATE).exists()  # still there to be fixed and rolled back


CORRUPT = {
    "an int where the text was": lambda d: d["live"][1].update(value=30),
    "a string in the list": lambda d: d["live"].append("x"),
    "an object for the list": lambda d: d.update(files={"path": FRAGMENT}),
    "true for the version": lambda d: d.update(version=True),
    "a relative procfs": lambda d: d.update(procfs="proc"),
    "a key twice": lambda d: d["live"].append(dict(d["live"][0])),
    "a number for content": lambda d: d["files"][0].update(content=1),
}


def test_wrong_types_in_the_state_restore_nothing(scratch):
    roots, root, _ = scratch
    saved = applied(roots, root)
    values = {k: live(roots.procfs, k) for k in (UDP, EST, MAX)}
    files = snapshot(root / "etc")
    for why, corrupt in CORRUPT.items():
        doc = json.loads(json.dumps(saved))
        corrupt(doc)
        (root / STATE).write_text(json.dumps(doc))
        proc = run_cli("rollback", "--root", str(root))
        assert "not a valid ct-tune rollback state" in one_line_error(proc), why
        assert {k: live(roots.procfs, k) for k in (UDP, EST, MAX)} == values, why
        assert snapshot(root / "etc") == files, why


def test_rollback_removes_temporary_files_a_killed_apply_left(scratch):
    """Killed after writing the temp file, before renaming it: the fragment is still
    the old one (nothing to restore there), the temp must go anyway."""
    roots, root, _ = scratch
    applied(roots, root)
    state = root / "var/lib/ct-tune"
    (state / "rollback.json").rename(state / "pending.json")
    doc = json.loads((state / "pending.json").read_text())
    old = next(f["content"] for f in doc["files"] if f["path"] == FRAGMENT)
    (root / FRAGMENT).write_text(old)
    temps = [root / "etc/sysctl.d/.99-ct-tune.conf.k2j4h5x_.tmp",
             root / "etc/modules-load.d/.ct-tune.conf.abcdefgh.tmp"]
    for t in temps:
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text("half a fil")
    proc = run_cli("rollback", "--root", str(root), "--procfs", str(roots.procfs))
    assert proc.returncode == 0, proc.stderr
    assert [t for t in temps if t.exists()] == []
    assert (root / FRAGMENT).read_text() == old


def test_rollback_uses_the_procfs_the_apply_used(tree, tmp_path):
    """Inside a throwaway namespace, so that the /proc an old rollback would write is the
    namespace's, never this host's."""
    roots = tree("nearly-full-drops")
    root = tmp_path / "root"
    with namespace(nft=False) as ns:
        ns_before = read_sysctl(ns, UDP)
        proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample",
                       "--profile", "nat-gateway", netns=ns)
        assert proc.returncode == 0, proc.stderr
        applied_udp = live(roots.procfs, UDP)
        assert applied_udp != "30"
        other = tmp_path / "other-proc"
        shutil.copytree(roots.procfs, other)
        mismatch = run_cli("rollback", "--root", str(root), "--procfs", str(other), netns=ns)
        err = one_line_error(mismatch)
        assert f"wrote its live values under {roots.procfs}, not --procfs {other}" in err
        assert live(roots.procfs, UDP) == applied_udp == live(other, UDP)
        back = run_cli("rollback", "--root", str(root), netns=ns)
        assert back.returncode == 0, back.stderr
        assert live(roots.procfs, UDP) == "30"
        assert read_sysctl(ns, UDP) == ns_before


def test_the_procfs_is_recorded_as_an_absolute_path(tree, tmp_path, monkeypatch):
    roots = tree("nearly-full-drops")
    monkeypatch.chdir(roots.procfs.parent)
    proc = run_cli("apply", "--procfs", "proc", "--sysfs", "sys", "--root", "root",
                   "--no-sample")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((roots.procfs.parent / "root" / STATE).read_text())
    assert doc["procfs"] == str(roots.procfs)


def test_capture_into_a_missing_directory_is_one_line(tree, tmp_path):
    roots = tree("defaults-16g")
    target = tmp_path / "no" / "such" / "dir"
    proc = run_cli("capture", *tree_args(roots), str(target))
    err = one_line_error(proc)
    assert err.startswith(f"ct-tune: {target}: cannot create the directory")
    assert not (tmp_path / "no").exists()


def test_capture_into_an_unwritable_directory_is_one_line(tree, tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private read-only mount")
    roots = tree("defaults-16g")
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$1" && shift && "$@"',
         "sh", str(ro), "env", f"PYTHONPATH={Path(__file__).parent.parent}",
         os.environ.get("PYTHON", __import__("sys").executable), "-m", "ct_tune", "capture",
         *tree_args(roots), str(ro)], capture_output=True, text=True, timeout=60)
    err = one_line_error(proc)
    assert err.startswith(f"ct-tune: {ro}: cannot write into the directory"), err
