"""apply / rollback against the real kernel, inside network namespaces, with a scratch root.

Files go to a scratch --root; live values are the namespace's own /proc/sys, where
timeouts are writable and nf_conntrack_max/buckets are read-only (a container's case).
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from netns import namespace, read_sysctl, sh, write_sysctl

pytestmark = pytest.mark.root

EST = "net.netfilter.nf_conntrack_tcp_timeout_established"
UDP = "net.netfilter.nf_conntrack_udp_timeout"
STREAM = "net.netfilter.nf_conntrack_udp_timeout_stream"
FRAGMENT = "etc/sysctl.d/99-ct-tune.conf"
# nat-gateway profile: established 21600, udp 60, stream 180 (written in this key order)
WANT = {EST: "21600", UDP: "60", STREAM: "180"}


def netfilter_values(ns: str) -> dict[str, str]:
    """Every writable-or-not net.netfilter value of the namespace except the live count."""
    out = sh("sh", "-c", "grep -r . /proc/sys/net/netfilter/", ns=ns).stdout
    values = {}
    for line in out.splitlines():
        path, _, value = line.partition(":")
        if not path.endswith("nf_conntrack_count"):
            values[path] = value
    return values


def tree_bytes(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*")) if p.is_file()}


def apply(ns: str, root: Path, *args: str):
    return run_cli("apply", "--root", str(root), "--profile", "nat-gateway", "--no-sample",
                   *args, netns=ns)


@pytest.fixture
def ns():
    with namespace(nft=False) as name:
        yield name


def test_apply_sets_timeouts_for_real_skips_readonly_keys_and_is_idempotent(ns, tmp_path):
    before = {k: read_sysctl(ns, k) for k in WANT}
    assert before == {EST: "432000", UDP: "30", STREAM: "120"}
    proc = apply(ns, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {k: read_sysctl(ns, k) for k in WANT} == WANT
    for key in ("nf_conntrack_max", "nf_conntrack_buckets"):
        assert f"skipped net.netfilter.{key} " in proc.stdout
    assert "must be set on the host" in proc.stdout
    fragment = tmp_path / FRAGMENT
    assert stat.S_IMODE(fragment.stat().st_mode) == 0o644
    text = fragment.read_text()
    assert text.startswith("# /etc/sysctl.d/99-ct-tune.conf: nf_conntrack settings written by "
                           "ct-tune ")
    assert "profile: nat-gateway; generated 20" in text
    assert "# net.netfilter.nf_conntrack_udp_timeout (udp-timeout: " in text
    assert "# source: profile nat-gateway: a UDP NAT mapping dies with its entry" in text
    assert "(OpenWrt package/kernel/linux/files/sysctl-nf-conntrack.conf)" in text
    assert f"\n{UDP} = 60\n" in text
    assert "nf_conntrack_max =" not in text  # read-only here: not persisted here either
    assert (tmp_path / "var/lib/ct-tune/rollback.json").exists()

    snapshot = tree_bytes(tmp_path / "etc")
    again = apply(ns, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to apply" in again.stdout
    assert tree_bytes(tmp_path / "etc") == snapshot


def test_dry_run_changes_no_byte_and_no_value(ns, tmp_path):
    old = "# mine\nnet.netfilter.nf_conntrack_udp_timeout = 45\n"
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / FRAGMENT).write_text(old)
    write_sysctl(ns, UDP, 45)
    files, values = tree_bytes(tmp_path), netfilter_values(ns)
    proc = apply(ns, tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "-net.netfilter.nf_conntrack_udp_timeout = 45" in proc.stdout
    assert "+net.netfilter.nf_conntrack_udp_timeout = 60" in proc.stdout
    assert "live values (would write" in proc.stdout
    assert "dry run: nothing was changed" in proc.stdout
    assert tree_bytes(tmp_path) == files
    assert netfilter_values(ns) == values


def test_rollback_restores_files_and_values(ns, tmp_path):
    old = "# mine\nnet.netfilter.nf_conntrack_udp_timeout = 45\n"
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / FRAGMENT).write_text(old)
    write_sysctl(ns, UDP, 45)
    values = netfilter_values(ns)
    assert apply(ns, tmp_path).returncode == 0
    assert read_sysctl(ns, UDP) == "60"
    backups = list((tmp_path / "var/lib/ct-tune/backup").rglob("99-ct-tune.conf"))
    assert [b.read_text() for b in backups] == [old]

    proc = run_cli("rollback", "--root", str(tmp_path), netns=ns)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / FRAGMENT).read_text() == old
    assert not (tmp_path / "etc/modules-load.d/ct-tune.conf").exists()
    assert netfilter_values(ns) == values
    again = run_cli("rollback", "--root", str(tmp_path), netns=ns)
    assert again.returncode == 3
    assert "nothing to roll back" in again.stderr


# A value inside the range ct-tune lets rules recommend (0..255 for this u8) that the
# kernel still refuses: nf_conntrack_events is proc_dou8vec_minmax 0..2 since 5.17
# (nf_conntrack_standalone.c, NF_SYSCTL_CT_EVENTS).  Values outside the key's type never
# reach the kernel (tests/test_injection.py).
REJECTED_STREAM = '''
id = "events-rejected"
title = "test: a value the kernel rejects"
parameter = "net.netfilter.nf_conntrack_events"
recommended = "3"
sources = ["tests/test_realkernel_apply.py"]
explanation = "the kernel refuses events beyond 2"
[[severity]]
level = "info"
summary = "test"
'''


def test_a_key_the_kernel_rejects_restores_every_earlier_key_and_writes_no_file(ns, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "stream.toml").write_text(REJECTED_STREAM)
    root = tmp_path / "root"
    root.mkdir()
    values = netfilter_values(ns)
    proc = run_cli("apply", "--root", str(root), "--profile", "nat-gateway", "--no-sample",
                   "--rules-dir", str(rules), netns=ns)
    assert proc.returncode == 3
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    # it sorts first, so nothing was written before it (restoring earlier live values:
    # test_a_file_that_cannot_be_written_restores_the_live_values)
    assert "cannot set net.netfilter.nf_conntrack_events = 3: Invalid argument" in err
    assert "restored 0 live value(s)" in err and "no file was changed" in err
    assert netfilter_values(ns) == values
    assert not (root / "etc").exists()


def test_a_file_that_cannot_be_written_restores_the_live_values(ns, tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/sysctl.d").write_text("not a directory")
    values = netfilter_values(ns)
    proc = apply(ns, tmp_path)
    assert proc.returncode == 3
    assert "cannot write" in proc.stderr and "restored 3 live value(s)" in proc.stderr
    assert netfilter_values(ns) == values
    assert (tmp_path / "etc/sysctl.d").read_text() == "not a directory"


def test_second_concurrent_apply_is_busy(ns, tmp_path):
    lock = tmp_path / "var/lib/ct-tune/lock"
    lock.parent.mkdir(parents=True)
    values = netfilter_values(ns)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = apply(ns, tmp_path, "--lock-wait", "0.3")
    assert proc.returncode == 4
    assert "another ct-tune apply or rollback is running" in proc.stderr
    assert netfilter_values(ns) == values
    assert not (tmp_path / "etc").exists()


KILL_AT_FRAGMENT_FSYNC = """
import os, runpy, signal, sys
real = os.fsync
def fsync(fd):
    if os.readlink(f"/proc/self/fd/{fd}").startswith(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)   # killed with the new file half done
    real(fd)
os.fsync = fsync
sys.argv = ["ct-tune", *sys.argv[1:]]
runpy.run_module("ct_tune", run_name="__main__")
"""


def test_killed_during_the_file_write_leaves_the_old_file_and_rollback_recovers(ns, tmp_path):
    old = "# mine\nnet.netfilter.nf_conntrack_udp_timeout = 45\n"
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / FRAGMENT).write_text(old)
    values = netfilter_values(ns)
    script = tmp_path / "killer.py"
    script.write_text(KILL_AT_FRAGMENT_FSYNC)
    proc = sh("env", f"PYTHONPATH={ROOT}", f"KILL_AT={tmp_path}/etc/sysctl.d/.99-ct-tune.conf.",
              sys.executable, str(script), "apply", "--root",
              str(tmp_path), "--profile", "nat-gateway", "--no-sample", ns=ns, check=False)
    assert proc.returncode == -9 or proc.returncode == 137, proc.stderr
    # never a partial file: the old one, whole; boot would not read the temp (not *.conf)
    assert (tmp_path / FRAGMENT).read_text() == old
    assert [p.name for p in (tmp_path / "etc/sysctl.d").iterdir() if p.name.endswith(".conf")
            ] == ["99-ct-tune.conf"]
    assert read_sysctl(ns, UDP) == "60"  # the live values were already written
    # a new apply must not overwrite the only record of what the killed one changed
    refused = apply(ns, tmp_path)
    assert refused.returncode == 3
    assert "an earlier apply was interrupted; run 'ct-tune rollback' first" in refused.stderr
    # the interrupted apply's saved state lets rollback put everything back
    back = run_cli("rollback", "--root", str(tmp_path), netns=ns)
    assert back.returncode == 0, back.stderr
    assert back.stdout.startswith("an apply was interrupted: restoring the state it saved in")
    assert netfilter_values(ns) == values
    assert (tmp_path / FRAGMENT).read_text() == old
    # and the next apply clears the dead temp file
    assert apply(ns, tmp_path).returncode == 0
    assert sorted(p.name for p in (tmp_path / "etc/sysctl.d").iterdir()) == ["99-ct-tune.conf"]


def test_not_root_is_refused_before_anything_is_touched(ns, tmp_path, unprivileged_python):
    if not Path("/usr/bin/setpriv").exists():
        pytest.skip("needs setpriv (util-linux) to drop privileges")
    os.chmod(tmp_path, 0o777)
    values = netfilter_values(ns)
    proc = sh(*unprivileged_python, "-m", "ct_tune", "apply", "--root", str(tmp_path),
              "--no-sample", ns=ns, check=False)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().startswith("ct-tune: apply and rollback change /etc and "
                                          "/proc/sys and must run as root")
    assert list(tmp_path.iterdir()) == []
    assert netfilter_values(ns) == values


def test_unprivileged_scratch_apply_without_live_values_rolls_back_unprivileged(
        ns, unprivileged_python):
    if not Path("/usr/bin/setpriv").exists():
        pytest.skip("needs setpriv (util-linux) to drop privileges")
    import shutil
    import tempfile

    # a scratch root the unprivileged user can reach (pytest's tmp_path is root's 0700)
    scratch = Path(tempfile.mkdtemp(prefix="ct-tune-scratch-"))
    try:
        os.chmod(scratch, 0o777)
        values = netfilter_values(ns)
        run = [*unprivileged_python, "-m", "ct_tune"]
        applied = sh(*run, "apply", "--root", str(scratch), "--no-live", "--no-sample",
                     ns=ns, check=False)
        assert applied.returncode == 0, applied.stderr
        fragment = scratch / "etc/sysctl.d/99-ct-tune.conf"
        assert fragment.stat().st_uid == 65534
        back = sh(*run, "rollback", "--root", str(scratch), ns=ns, check=False)
        assert back.returncode == 0, back.stderr
        assert "rolled back: 0 live value(s), 1 file(s)" in back.stdout
        assert not fragment.exists()
        assert netfilter_values(ns) == values
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
