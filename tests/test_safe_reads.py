"""Special files and oversized files in place of anything ct-tune reads: one line naming
the file, exit 3, never a hang (every run has a short timeout) or a read without end."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, tree_args

from ct_tune import safeio
from ct_tune.errors import InputError

TIMEOUT = 30  # a FIFO hung the old code forever; a run here takes about a second


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _chardev(path: Path) -> None:
    """A copy of /dev/zero (reading it never ends); device nodes need root."""
    if os.geteuid() != 0:
        pytest.skip("creating a character device (mknod) needs root")
    os.mknod(path, 0o644 | stat.S_IFCHR, os.stat("/dev/zero").st_rdev)


def _socket(path: Path) -> None:
    # bound by its short relative name: a socket's path is limited to 108 bytes
    with contextlib.chdir(path.parent):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path.name)
        s.close()


def _directory(path: Path) -> None:
    path.mkdir()


KINDS: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (_fifo, "FIFO"),
    "chardev": (_chardev, "character device"),
    "socket": (_socket, "socket"),
    "directory": (_directory, "directory"),
}


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    make(path)


def _snapshot(tree, tmp_path: Path) -> Path:
    roots = tree("defaults-16g")
    proc = run_cli("collect", "--no-sample", *tree_args(roots), timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "facts.json"
    out.write_text(proc.stdout)
    return out


def _target(name: str, tree, tmp_path: Path) -> tuple[Path, list[str]]:
    """(the file to replace, the ct-tune arguments that read it)."""
    roots = tree("defaults-16g")
    audit = ["audit", "--no-sample", *tree_args(roots)]
    if name == "sysctl":
        return roots.proc("sys/net/netfilter/nf_conntrack_max"), audit
    if name == "keepalive":
        return roots.proc("sys/net/ipv4/tcp_keepalive_time"), audit
    if name == "meminfo":
        return roots.proc("meminfo"), audit
    if name == "sysfs":
        return roots.sys("module/nf_conntrack/parameters/hashsize"), audit
    if name == "capture":
        return (roots.sys("module/nf_conntrack/parameters/hashsize"),
                ["capture", str(tmp_path / "copy"), *tree_args(roots)])
    if name == "stat":
        return roots.proc("net/stat/nf_conntrack"), audit
    if name == "table":  # a captured tree's table dump is sampled when it is there
        return roots.proc("net/nf_conntrack"), ["audit", *tree_args(roots)]
    rules = tmp_path / "rules"
    if name == "rule":
        return rules / "zz-site.toml", [*audit, "--rules-dir", str(rules)]
    if name == "profile":
        return rules / "profiles" / "site.toml", [*audit, "--rules-dir", str(rules)]
    if name == "facts":
        snap = tmp_path / "facts.json"
        return snap, ["audit", "--facts", str(snap)]
    if name == "sysctl.d":
        root = tmp_path / "root"
        return root / "etc/sysctl.d/50-site.conf", [*audit, "--root", str(root)]
    if name == "state":
        root = tmp_path / "scratch"
        return (root / "var/lib/ct-tune/rollback.json",
                ["rollback", "--dry-run", "--root", str(root), "--procfs", str(roots.procfs)])
    raise AssertionError(name)


TARGETS = ["sysctl", "keepalive", "meminfo", "sysfs", "capture", "stat", "table", "rule",
           "profile", "facts", "sysctl.d", "state"]
# net/netfilter is walked: a directory there is a directory of sysctls (nf_log is one), so a
# directory named nf_conntrack_max means that key is missing, not a special file.
CASES = [(t, k) for t in TARGETS for k in KINDS if (t, k) != ("sysctl", "directory")]


@pytest.mark.parametrize(("target", "kind"), CASES)
def test_special_file_in_place_of_an_input_is_refused_by_name(target, kind, tree, tmp_path):
    path, args = _target(target, tree, tmp_path)
    make, words = KINDS[kind]
    _replace(path, make)
    proc = run_cli(*args, timeout=TIMEOUT)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == f"ct-tune: {path}: not a regular file ({words})\n"


def test_a_sysctl_value_of_2_mb_is_refused_naming_the_limit(tree):
    roots = tree("defaults-16g")
    path = roots.proc("sys/net/netfilter/nf_conntrack_max")
    path.write_text("1" * (2 << 20) + "\n")
    proc = run_cli("audit", "--no-sample", *tree_args(roots), timeout=TIMEOUT)
    assert proc.returncode == 3
    assert proc.stderr == (f"ct-tune: {path}: larger than 64 KiB, the limit for a sysctl or "
                           "sysfs value (see LIMITS in ct-tune(8))\n")


def test_a_huge_rule_file_is_refused_naming_the_limit(tree, tmp_path):
    roots = tree("defaults-16g")
    rules = tmp_path / "rules"
    rules.mkdir()
    huge = rules / "huge.toml"
    huge.write_text("# padding\n" * 200_000)  # valid TOML, 2 MB
    proc = run_cli("rules", "list", "--rules-dir", str(rules), *tree_args(roots),
                   timeout=TIMEOUT)
    assert proc.returncode == 3
    assert proc.stderr == (f"ct-tune: {huge}: larger than 1 MiB, the limit for a rule or "
                           "profile file (see LIMITS in ct-tune(8))\n")


def test_facts_on_stdin_from_dev_zero_stops_at_the_limit(tmp_path):
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run([sys.executable, "-m", "ct_tune", "audit", "--facts", "-"],
                              stdin=zero, capture_output=True, text=True, timeout=TIMEOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert proc.returncode == 3
    assert proc.stderr == ("ct-tune: -: larger than 64 MiB, the limit for a facts snapshot "
                           "(see LIMITS in ct-tune(8))\n")


def test_facts_of_normal_size_still_load_from_a_file_and_stdin(tree, tmp_path):
    snap = _snapshot(tree, tmp_path)
    assert json.loads(snap.read_text())["schema"] == "ct-tune/facts"
    for args, stdin in ((["--facts", str(snap)], None), (["--facts", "-"], snap.read_text())):
        proc = run_cli("audit", *args, input=stdin, timeout=TIMEOUT)
        assert proc.returncode in (0, 1, 2), proc.stderr


def test_masked_boot_files_still_read_as_empty(tree, tmp_path):
    """A link to /dev/null masks a sysctl.d, modules-load.d or udev file: not an error."""
    roots = tree("defaults-16g")
    root = tmp_path / "root"
    for rel in ("etc/sysctl.d/50-masked.conf", "etc/modules-load.d/masked.conf",
                "etc/udev/rules.d/99-masked.rules"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to("/dev/null")
    (root / "dev").mkdir()
    if os.geteuid() == 0:  # as on a real root: root/dev/null is the device itself
        os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
    proc = run_cli("audit", "--no-sample", *tree_args(roots), "--root", str(root),
                   timeout=TIMEOUT)
    assert proc.returncode in (0, 1, 2), proc.stderr


def test_missing_and_unreadable_optional_files_are_none(tmp_path):
    assert safeio.read_text(tmp_path / "nope", safeio.VALUE, missing_ok=True) is None
    assert safeio.read_text(tmp_path / "a" / "b", safeio.VALUE, missing_ok=True) is None
    with pytest.raises(InputError, match="cannot read: No such file"):
        safeio.read_text(tmp_path / "nope", safeio.VALUE)


def test_a_file_of_exactly_the_bound_is_read_and_one_byte_more_is_not(tmp_path):
    bound = safeio.Bound(100, "a test file")
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    assert safeio.read_bytes(f, bound) == b"x" * 100
    f.write_bytes(b"x" * 101)
    with pytest.raises(InputError, match="larger than 100 bytes, the limit for a test file"):
        safeio.read_bytes(f, bound)


def test_procfs_files_that_report_size_0_are_read_whole():
    data = safeio.read_text("/proc/self/status", safeio.PROC_TABLE)
    assert data is not None and "Name:" in data and os.stat("/proc/self/status").st_size == 0
