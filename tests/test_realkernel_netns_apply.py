"""`ip netns exec NS ct-tune apply` against the real kernel (root only).

Inside a network namespace /etc is the host's: a fragment written there would be applied
at boot to the host's initial namespace, not the one tuned.  So apply writes live values
only and says how such values persist for a pod or container.  These tests run ct-tune
with the host's real /etc (that is the point) but with a private, empty /var/lib (a
tmpfs in a private mount namespace), so not even the rollback state lands on the host,
and /etc bind-mounted read-only there, so a ct-tune that tried to write it fails instead.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from netns import namespace, read_sysctl

pytestmark = pytest.mark.root

EST = "net.netfilter.nf_conntrack_tcp_timeout_established"
UDP = "net.netfilter.nf_conntrack_udp_timeout"
HOST_DIRS = ("/etc", "/etc/sysctl.d", "/etc/modules-load.d", "/etc/modprobe.d",
             "/usr/lib/sysctl.d", "/run/sysctl.d")


def etc_state() -> dict[str, object]:
    """Listing and mtimes of the directories boot reads (and /etc itself)."""
    out: dict[str, object] = {}
    for d in HOST_DIRS:
        try:
            st = os.stat(d)
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            out[d] = None
            continue
        out[d] = (st.st_mtime_ns, names,
                  {n: os.lstat(f"{d}/{n}").st_mtime_ns for n in names})
    return out


def in_ns(ns: str, *commands: str) -> subprocess.CompletedProcess:
    """Run shell commands in the namespace with a private tmpfs on /var/lib."""
    ct = f"{shlex.quote(sys.executable)} -m ct_tune"
    # /etc read-only in here too: should ct-tune try to write it, it fails rather than
    # changing the host (the listing check below would catch a write through anyway)
    script = ("mount -t tmpfs ct-tune-test /var/lib && mount --bind /etc /etc && "
              "mount -o remount,ro,bind /etc && ") + " && ".join(
        c.replace("CT ", ct + " ") for c in commands)
    return subprocess.run(["ip", "netns", "exec", ns, "unshare", "-m", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_apply_in_a_namespace_writes_live_values_only_and_no_file_under_the_hosts_etc(
        tmp_path: Path):
    host_est, host_udp = read_sysctl(None, EST), read_sysctl(None, UDP)
    before = etc_state()
    with namespace(nft=False) as ns:
        assert read_sysctl(ns, EST) == "432000"
        proc = in_ns(ns, "CT apply --profile nat-gateway --no-sample")
        assert proc.returncode == 0, proc.stderr
        # the live values are set, in the namespace
        assert read_sysctl(ns, EST) == "21600"
        assert read_sysctl(ns, UDP) == "60"
        # it says why no file, and how such values persist for a pod or container
        out = proc.stdout
        assert "not the initial network namespace" in out
        assert "applied: 3 live value(s), 0 file(s)" in out
        assert f"- name: {EST}" in out and "--allowed-unsafe-sysctls" in out
        assert f"--sysctl {EST}=21600" in out
        assert '"type": "tuning"' in out
        assert "etc/sysctl.d" not in out.split("not persisted")[0]  # no file diff
        # an explicit --root still writes the files there (a container's own tree)
        proc = in_ns(ns, f"CT apply --profile nat-gateway --no-sample --root {tmp_path}")
        assert proc.returncode == 0, proc.stderr
        assert "21600" in (tmp_path / "etc/sysctl.d/99-ct-tune.conf").read_text()
        assert "not persisted" not in proc.stdout
    assert etc_state() == before
    assert (read_sysctl(None, EST), read_sysctl(None, UDP)) == (host_est, host_udp)


def test_rollback_of_a_namespace_apply_refuses_to_run_in_another_namespace():
    host_est = read_sysctl(None, EST)
    with namespace(nft=False) as ns:
        proc = in_ns(ns, "CT apply --profile nat-gateway --no-sample",
                     # the host's network namespace, same (private) /var/lib: refused
                     f"! nsenter --net=/proc/{os.getpid()}/ns/net CT rollback",
                     "CT rollback")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "saved in network namespace" in proc.stderr
        assert read_sysctl(ns, EST) == "432000"  # restored where it was changed
    assert read_sysctl(None, EST) == host_est
