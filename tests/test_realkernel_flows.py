"""Known flow mixes in a real conntrack table (root, network namespaces)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import flowmix
import pytest
from conftest import run_cli
from netns import namespace, write_sysctl

pytestmark = pytest.mark.root


class Mix:
    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(Path(flowmix.__file__))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def collect(ns: str, *args: str) -> dict:
    proc = run_cli("collect", *args, netns=ns)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["flows"]


@pytest.fixture
def mixed():
    with namespace() as ns:
        write_sysctl(ns, "net.netfilter.nf_conntrack_udp_timeout", 100)
        mix = Mix(ns)
        try:
            yield ns
        finally:
            mix.close()


def test_aggregates_equal_the_flows_created(mixed):
    time.sleep(3)  # the unreplied UDP flows are now about 3 s idle
    flows = collect(mixed)
    assert flows["source"] == "/proc/net/nf_conntrack"
    assert flows["malformed"] == 0
    cls = flows["classes"]
    assert cls["udp/unreplied"]["entries"] == flowmix.N_UDP_UNREPLIED
    assert cls["udp/replied"]["entries"] == flowmix.N_UDP_REPLIED
    assert cls["tcp/ESTABLISHED"]["entries"] == flowmix.N_TCP_EST
    assert cls["tcp/TIME_WAIT"]["entries"] == flowmix.N_TCP_TW
    assert cls["icmp"]["entries"] == flowmix.N_ICMP
    assert flows["by_l4"] == {"udp": 47, "tcp": 8, "icmp": 2}
    assert flows["by_flag"]["UNREPLIED"] == flowmix.N_UDP_UNREPLIED
    assert flows["by_flag"]["ASSURED"] >= flowmix.N_TCP_EST
    assert dict(map(tuple, flows["top_dports"]))[5432] == flowmix.N_TCP_EST + flowmix.N_TCP_TW
    # idle time: udp timeout 100 s -> 1 s bins; the unreplied flows sat about 3 s
    hist = {int(k): v for k, v in cls["udp/unreplied"]["idle_histogram"].items()}
    assert sum(hist.values()) == flowmix.N_UDP_UNREPLIED
    assert all(2 <= b <= 6 for b in hist), hist


def test_conntrack_L_fallback_gives_the_same_aggregates(mixed):
    import shutil

    if shutil.which("conntrack") is None:
        pytest.skip("conntrack-tools not installed")
    a = collect(mixed, "--table-source", "procfs")
    b = collect(mixed, "--table-source", "conntrack")
    assert b["source"].endswith("-L (ctnetlink)")
    for key in ("entries_read", "by_l3", "by_l4", "by_flag", "top_dports"):
        assert a[key] == b[key], key
    assert {k: v["entries"] for k, v in a["classes"].items()} == {
        k: v["entries"] for k, v in b["classes"].items()}


@pytest.mark.parametrize("dump", [["cat", "/proc/net/nf_conntrack"], ["conntrack", "-L"]])
def test_the_kernel_table_takes_the_block_scanner_whole(mixed, dump):
    """What this kernel prints (procfs, and conntrack -L when installed) is read by the block
    scanner, not line by line: a change that made the common table fall back would stay
    correct and pass every other test, only several times slower."""
    import shutil

    from ct_tune.flowparse import scan_block

    if shutil.which(dump[0]) is None:
        pytest.skip(f"{dump[0]} not installed")
    text = subprocess.run(["ip", "netns", "exec", mixed, *dump], capture_output=True,
                          text=True, check=True).stdout
    assert text.count("\n") == sum(flowmix.__dict__[k] for k in (
        "N_UDP_UNREPLIED", "N_UDP_REPLIED", "N_TCP_EST", "N_TCP_TW", "N_ICMP"))
    cols = scan_block(text)
    assert cols is not None and len(cols.l4) == text.count("\n")
    if dump[0] == "cat":  # the kernel's own layout takes the specialised pattern, not the general
        from ct_tune.flowparse import _scan_general, _scan_kernel

        kernel = _scan_kernel(text)
        assert kernel is not None and kernel == cols
        assert kernel._replace(flag1=(), flag2=()) == _scan_general(text)._replace(
            flag1=(), flag2=())


def test_sample_limit_scales_to_the_count(mixed):
    flows = collect(mixed, "--sample-limit", "20")
    assert flows["entries_read"] == 20
    assert flows["sampled"] is True
    assert flows["entries_estimated"] == 57
    total = sum(c["entries"] for c in flows["classes"].values())
    assert abs(total - 57) <= len(flows["classes"])  # rounding per class
    assert any(c["margin"] > 0 for c in flows["classes"].values())


@pytest.fixture
def idle_mix():
    """The known mix with 100 s established/UDP timeouts, so idle time has 1 s bins."""
    with namespace() as ns:
        write_sysctl(ns, "net.netfilter.nf_conntrack_udp_timeout", 100)
        write_sysctl(ns, "net.netfilter.nf_conntrack_tcp_timeout_established", 100)
        mix = Mix(ns)
        try:
            time.sleep(3)  # every flow is now about 3 s idle
            yield ns
        finally:
            mix.close()


def test_whatif_counts_real_flows_idle_beyond_a_proposed_timeout(idle_mix):
    from ct_tune import whatif

    flows = collect(idle_mix)
    key = "net.netfilter.nf_conntrack_tcp_timeout_established"
    shorter = whatif.whatif(flows, key, 1)
    assert shorter["entries"] == flowmix.N_TCP_EST
    assert shorter["idle_beyond"] == flowmix.N_TCP_EST
    assert shorter["top_dports"] == [[5432, flowmix.N_TCP_EST, 0]]
    assert shorter["projected"] == 0
    longer = whatif.whatif(flows, key, 30)
    assert longer["idle_beyond"] == 0
    assert longer["projected"] == flowmix.N_TCP_EST


SHORT_UDP_PROFILE = '''
name = "short-udp"
extends = "default"
[targets]
dominance_min_usage = 0.0
[timeouts.nf_conntrack_udp_timeout]
value = 1
reason = "test: far below how long these flows have been idle"
source = "tests/test_realkernel_flows.py"
'''


def test_audit_explains_what_a_timeout_would_forget_from_a_real_table(idle_mix, tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "short-udp.toml").write_text(SHORT_UDP_PROFILE)
    proc = run_cli("audit", "--format", "json", "--rules-dir", str(tmp_path),
                   "--profile", "short-udp", netns=idle_mix)
    assert proc.returncode in (0, 1), proc.stderr
    found = {f["rule"]: f for f in json.loads(proc.stdout)["findings"]}
    udp = found["udp-timeout"]
    assert udp["recommended"] == 1
    n_udp = flowmix.N_UDP_UNREPLIED + flowmix.N_UDP_REPLIED
    assert udp["evidence"]["whatif"]["idle_beyond"] == n_udp
    assert f"{n_udp} of them (100.0%) have been idle longer than 1 s" in udp["explanation"]
    dom = found["udp-unreplied-dominance"]
    assert dom["evidence"]["uu"]["entries"] == flowmix.N_UDP_UNREPLIED
    occ = found["timeout-projection"]["evidence"]["occ"]
    assert occ["idle_beyond"] == n_udp
    assert occ["projected"] == occ["entries"] - n_udp
