"""Throwaway network namespaces with a real conntrack table, for tests against the kernel.

Each namespace gets lo up and an nftables chain that accepts established
traffic, so conntrack engages for every flow on 127.0.0.0/8 inside it.  Only
root can create them; callers skip with a reason elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

NFT_RULES = """
table inet ct_tune_test {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
  }
}
"""


def require_netns() -> None:
    """Skip (with the reason) where namespaces with conntrack cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 ('ip')")
    if not os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max"):
        pytest.skip("nf_conntrack is not available in this kernel")


def sh(*cmd: str, ns: str | None = None, input: str | None = None, check: bool = True
       ) -> subprocess.CompletedProcess:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    return subprocess.run(full, capture_output=True, text=True, input=input, check=check,
                          timeout=60)


@contextmanager
def namespace(nft: bool = True) -> Iterator[str]:
    require_netns()
    name = f"cttune-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "set", "lo", "up", ns=name)
        if nft:
            if shutil.which("nft") is None:
                pytest.skip("needs nftables ('nft') to engage conntrack")
            sh("nft", "-f", "-", ns=name, input=NFT_RULES)
        yield name
    finally:
        sh("ip", "netns", "delete", name, check=False)


def write_sysctl(ns: str, key: str, value: int) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    sh("sh", "-c", f"echo {int(value)} > {path}", ns=ns)


def read_sysctl(ns: str | None, key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    return sh("cat", path, ns=ns).stdout.strip()
