"""Diagnoses the kernel can show, in a throwaway namespace (root only): the real cause of
a bloated table is named, and apply acts on it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from netns import namespace, read_sysctl, sh, write_sysctl
from test_realkernel_netns_apply import in_ns

from ct_tune import whatif

pytestmark = pytest.mark.root

UDP = "net.netfilter.nf_conntrack_udp_timeout"
N_UDP = 3000

STEPS = 20

# unreplied UDP flows from one socket each (distinct source ports) to 1,500 ports, so no
# single port is the cause.  A table in steady state holds flows of every age up to the
# timeout; the test cannot wait 10 minutes, so it lets the kernel age them: a flow sent
# while udp_timeout is 600 - 30 k has 600 - 30 k s left, which under the final 600 s is
# what a flow idle for 30 k s has.  Step k of STEPS sends N_UDP / STEPS flows.
FLOWS = textwrap.dedent(f"""
    import socket, sys
    step = int(sys.argv[1])
    for i in range({N_UDP // STEPS}):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # a source port of its own: two ephemeral ports alike to one port would be one
        # entry (about 1 run in 20 lost a flow that way: 2,999 of 3,000)
        s.bind(("127.0.0.1", 10000 + step * {N_UDP // STEPS} + i))
        s.sendto(b"x", ("127.0.0.2", 20000 + (step * {N_UDP // STEPS} + i) % 1500))
        s.close()
    """)


def pressure_profile(rules_dir: Path) -> None:
    """The default profile with its warning threshold at 1 % (and its sizing target at
    0.5 %, below it, as every profile's must be): max is global and read-only in a
    namespace and the test may not lower it, so the namespace's few thousand entries
    count as a table under pressure, the situation the diagnosis is for."""
    text = (ROOT / "rules/profiles/default.toml").read_text()
    text = text.replace('name = "default"', 'name = "pressure"', 1)
    text = text.replace("warn_usage = 0.75", "warn_usage = 0.01", 1)
    text = text.replace("target_usage = 0.5", "target_usage = 0.005", 1)
    assert 'name = "pressure"' in text and "warn_usage = 0.01" in text
    assert "target_usage = 0.005" in text
    (rules_dir / "profiles").mkdir(parents=True)
    (rules_dir / "profiles/pressure.toml").write_text(text)


def count(ns: str) -> int:
    return int(read_sysctl(ns, "net.netfilter.nf_conntrack_count"))


def test_raised_udp_timeout_is_named_as_the_cause_and_apply_brings_it_back(tmp_path: Path):
    host_udp = read_sysctl(None, UDP)
    pressure_profile(tmp_path / "rules")
    prof = ("--rules-dir", str(tmp_path / "rules"), "--profile", "pressure")
    with namespace() as ns:
        for k in range(STEPS):
            write_sysctl(ns, UDP, 600 - 30 * k)
            sh(sys.executable, "-c", FLOWS, str(k), ns=ns)
        write_sysctl(ns, UDP, 600)
        assert count(ns) >= N_UDP
        proc = run_cli("audit", "--format", "json", *prof, netns=ns)
        assert proc.returncode in (0, 1, 2), proc.stderr
        findings = {f["rule"]: f for f in json.loads(proc.stdout)["findings"]}
        udp = findings["udp-timeout"]
        assert udp["current"] == 600 and udp["recommended"] == 30
        assert udp["severity"] == "warning"
        assert "udp_timeout=600 (20.0x the kernel's 30 s) holds" in udp["summary"]
        held = udp["evidence"]["held"]
        assert held["classes"][0] == "udp/unreplied"
        assert held["share"] > 0.9
        # Little's law: 600 s -> 30 s keeps about 1/20 of the flows (all younger than 30 s)
        assert held["freed"] >= 0.9 * N_UDP
        assert "frees ~" in udp["summary"]
        # the established timeout holds none of this table: no table-full claim
        est = findings["tcp-timeout-established"]
        assert est["severity"] != "warning"
        assert "full" not in est["summary"]
        assert est["evidence"]["relief"]["freed"] == 0
        # and the table's attribution puts udp_timeout first
        attr = findings["table-attribution"]
        assert attr["evidence"]["top"]["key"] == "nf_conntrack_udp_timeout"
        # no port was named as the cause: the flows are spread over 1,500 ports
        dom = findings.get("udp-unreplied-dominance")
        if dom:
            assert "dport" not in dom["summary"]
        text = run_cli("audit", "--explain", *prof, netns=ns).stdout
        assert "not the kernel default: 600 s is 20.0x the 30 s" in text
        # apply in the namespace: the recommendation reaches the plan and the kernel
        proc = in_ns(ns, "CT apply " + " ".join(prof))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert read_sysctl(ns, UDP) == "30"
    assert read_sysctl(None, UDP) == host_udp


def test_a_raised_udp_timeout_on_a_table_too_new_for_its_what_if(tmp_path: Path):
    """The same flows sent in one burst under udp_timeout=600: every entry is seconds
    old, so returning to the default frees nothing now.  The raised timeout is still named
    as what holds the table, nothing is recommended, and the arrival rate is the burst's
    (entries over the seconds they came in), not entries / 600 s."""
    pressure_profile(tmp_path / "rules")
    prof = ("--rules-dir", str(tmp_path / "rules"), "--profile", "pressure")
    with namespace() as ns:
        write_sysctl(ns, UDP, 600)
        for k in range(STEPS):  # all at once: no aging
            sh(sys.executable, "-c", FLOWS, str(k), ns=ns)
        assert count(ns) >= N_UDP
        proc = run_cli("audit", "--format", "json", *prof, netns=ns)
        assert proc.returncode in (0, 1, 2), proc.stderr
        findings = {f["rule"]: f for f in json.loads(proc.stdout)["findings"]}
        udp = findings["udp-timeout"]
        assert udp["severity"] == "info" and udp["recommended"] == 600
        assert udp["evidence"]["young"] is True
        oldest = udp["evidence"]["held"]["oldest"]
        assert oldest <= 30
        assert (f"udp_timeout=600 (20.0x the kernel's 30 s) holds 100.0% of the table, "
                f"every entry idle under {oldest} s: lowering it frees nothing now") \
            in udp["summary"]
        attr = findings["table-attribution"]
        assert attr["evidence"]["yr"]["key"] == "nf_conntrack_udp_timeout"
        assert "every entry idle under" in attr["summary"]
        assert "the default frees none of them now" in attr["summary"]
        # the burst's rate, from the facts the audit read
        flows = json.loads(run_cli("collect", netns=ns).stdout)["flows"]
        got = whatif.share(flows, "udp/unreplied")
        assert got["span"] <= 30
        assert got["rate"] >= flows["classes"]["udp/unreplied"]["entries"] / 30
        # and apply changes nothing for it
        proc = in_ns(ns, "CT apply " + " ".join(prof))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert read_sysctl(ns, UDP) == "600"


# --- TIME_WAIT and CLOSE_WAIT, from real connections -------------------------------------
#
# The dominance rules report a class once it holds dominance_share (50 %) of the sample and
# dominance_min_usage (10 %) of nf_conntrack_max.  nf_conntrack_max is global and read-only
# in a namespace, so the tests make that many real connections: 12 % of this host's max
# (31,458 at the default 262,144: loopback connects run at 3,000-10,000 per second here).
SHARE_OF_MAX = 0.12
MOST_CONNECTIONS = 150_000


def _needed() -> int:
    n = int(int(read_sysctl(None, "net.netfilter.nf_conntrack_max")) * SHARE_OF_MAX)
    if n > MOST_CONNECTIONS:
        pytest.skip(f"nf_conntrack_max here needs {n:,} connections for 10 % of it "
                    f"(more than the {MOST_CONNECTIONS:,} this test makes)")
    return max(n, 3000)


# Aging, as for UDP above: step k of AGE_STEPS makes its connections while the namespace's
# timeout is TOP - k * (TOP - BOTTOM) / AGE_STEPS, so under the final TOP they look idle
# for up to TOP - BOTTOM s, a table in steady state; BOTTOM leaves the audit time to run.
AGE_STEPS = 15

# n connections, each closed by both ends (client first): conntrack's TIME_WAIT.  Many
# destination addresses (all of 127/8 is on lo) so no 4-tuple repeats: a SYN on a
# TIME_WAIT entry would reopen it rather than add one.
TW_GEN = textwrap.dedent("""
    import socket, sys
    n, steps, top, bottom = map(int, sys.argv[1:5])
    key = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait"
    ls = []
    for p in range(4):
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("0.0.0.0", 8000 + p))
        l.listen(4096)
        ls.append(l)
    for k in range(steps):
        with open(key, "w") as f:
            f.write(str(top - k * (top - bottom) // steps))
        for i in range(k * n // steps, (k + 1) * n // steps):
            c = socket.socket()
            c.connect((f"127.0.{1 + i // 20000}.{1 + i % 200}", 8000 + i % 4))
            s, _ = ls[i % 4].accept()
            c.close()
            s.close()
    with open(key, "w") as f:
        f.write(str(top))
    """)

# A server that never accepts (or closes): connections wait in its accept queues, and the
# client's FIN moves each to CLOSE_WAIT, where it stays; 16 queues of 4,096.
CW_SERVER = textwrap.dedent("""
    import socket, time
    ls = []
    for p in range(16):
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("0.0.0.0", 9000 + p))
        l.listen(4096)
        ls.append(l)
    print("ready", flush=True)
    time.sleep(600)
    """)

# connections [first, last) to the server, each half-closed by the client at once
CW_CLIENT = textwrap.dedent("""
    import socket, sys
    dst, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for i in range(first, last):
        c = socket.socket()
        c.connect((dst, 9000 + i % 16))
        c.close()
    """)

CW = "net.netfilter.nf_conntrack_tcp_timeout_close_wait"
CW_TOP, CW_BOTTOM = 3600, 300  # kube-proxy's 1 h, as on a Kubernetes node


@contextmanager
def _server(ns: str) -> Iterator[None]:
    """CW_SERVER running in the namespace until the block ends (killed by its pid)."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", CW_SERVER],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _half_close(client_ns: str, timeout_ns: str, dst: str, n: int) -> None:
    """n half-closed connections from client_ns to dst, aged through CW in timeout_ns
    (the namespace whose table tracks them)."""
    for k in range(AGE_STEPS):
        write_sysctl(timeout_ns, CW, CW_TOP - k * (CW_TOP - CW_BOTTOM) // AGE_STEPS)
        sh(sys.executable, "-c", CW_CLIENT, dst, str(k * n // AGE_STEPS),
           str((k + 1) * n // AGE_STEPS), ns=client_ns)
    write_sysctl(timeout_ns, CW, CW_TOP)


def _ss_count(ns: str, state: str) -> int:
    """Sockets in a state as ss(8) counts them (netlink, not /proc/net/tcp)."""
    out = sh("ss", "-Htan", "state", state, ns=ns).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def _audit(ns: str, *args: str) -> tuple[dict, dict]:
    proc = run_cli("audit", "--format", "json", *args, netns=ns, timeout=300)
    assert proc.returncode in (0, 1, 2), proc.stderr
    report = json.loads(proc.stdout)
    return report, {f["rule"]: f for f in report["findings"]}


def test_many_short_connections_fill_the_table_with_time_wait(tmp_path: Path):
    n = _needed()
    with namespace() as ns:
        sh(sys.executable, "-c", TW_GEN, str(n), str(AGE_STEPS), "120", "30", ns=ns)
        report, found = _audit(ns)
        tw = found["time-wait-dominance"]
        ev = tw["evidence"]
        # what the user sees: the class, its share, the timeout that holds it, the what-if
        assert tw["severity"] == "info"  # about 12 % of max: far below the 75 % warning
        assert ev["tw"]["class"] == "tcp/TIME_WAIT"
        assert ev["tw"]["timeout_key"] == "net.netfilter.nf_conntrack_tcp_timeout_time_wait"
        assert ev["tw"]["timeout"] == 120
        held = ev["tw"]["entries"]
        assert 0.9 * n <= held <= n and ev["tw"]["share"] > 0.99
        assert ev["of_max"] >= 0.10
        assert sorted(p for p, _, _ in ev["tw"]["top_dports"]) == [8000, 8001, 8002, 8003]
        # no rule recommends a TIME_WAIT timeout here: the what-if is at the Linux
        # endpoints' 60 s; the entries look idle 0-90 s, so about 2/3 of them stay
        assert ev["alt"] == 60 and ev["w"]["proposed"] == 60
        assert ev["w"]["projected"] == pytest.approx(held * 2 / 3, rel=0.15)
        assert f"TIME_WAIT is {ev['tw']['share']:.1%} of the table ({held:,})" in tw["summary"]
        assert f"(at 1 min: ~{ev['w']['projected']:,})" in tw["summary"]
        assert "at least 50% of the sampled table" in tw["explanation"]
        assert "10% of nf_conntrack_max" in tw["explanation"]
        assert report["facts"]["flows"]["classes"]["tcp/TIME_WAIT"]["entries"] == held
        # the same table under pressure (max cannot be lowered here): a warning, what-if
        # and the key to shorten in its summary
        pressure_profile(tmp_path / "rules")
        _, found = _audit(ns, "--rules-dir", str(tmp_path / "rules"), "--profile", "pressure")
        tw = found["time-wait-dominance"]
        assert tw["severity"] == "warning"
        assert ("reuse connections or shorten net.netfilter.nf_conntrack_tcp_timeout_time_wait"
                " (at 1 min: ~") in tw["summary"]


def test_half_closed_flows_of_a_local_server_are_named_as_its_leak():
    n = _needed()
    with namespace() as ns, _server(ns):
        _half_close(ns, ns, "127.0.0.1", n)
        leaked = _ss_count(ns, "close-wait")
        assert leaked >= n  # the server never closes: every one is still there
        report, found = _audit(ns)
        assert report["facts"]["sockets"]["close_wait"] == leaked
        cw = found["close-wait-dominance"]
        ev = cw["evidence"]
        assert cw["severity"] == "info"
        assert ev["cw"]["class"] == "tcp/CLOSE_WAIT" and ev["cw"]["timeout"] == CW_TOP
        assert ev["cw"]["timeout_key"] == CW
        assert ev["cw"]["entries"] >= 0.9 * n
        assert ev["local"] == leaked and ev["elsewhere"] is False
        assert (f"{leaked:,} sockets here are in CLOSE_WAIT, an application not closing them"
                in cw["summary"])
        assert "forwarded" not in cw["summary"]
        assert f"This network namespace has {leaked:,} TCP sockets in CLOSE_WAIT" in (
            cw["explanation"])


@contextmanager
def _routed() -> Iterator[tuple[str, str, str]]:
    """client -- router -- server: three namespaces, two veth pairs, the router forwarding
    with conntrack engaged on its forward hook (its own table, no sockets of its own)."""
    with namespace(nft=False) as client, namespace(nft=False) as router, \
            namespace(nft=False) as server:
        tag = router[-6:]
        c_if, s_if = f"c{tag}", f"s{tag}"
        sh("ip", "link", "add", f"{c_if}a", "netns", client, "type", "veth", "peer", "name",
           f"{c_if}b", "netns", router)
        sh("ip", "link", "add", f"{s_if}a", "netns", server, "type", "veth", "peer", "name",
           f"{s_if}b", "netns", router)
        for ns, dev, addr, via in ((client, f"{c_if}a", "10.1.0.2/24", "10.1.0.1"),
                                   (server, f"{s_if}a", "10.2.0.2/24", "10.2.0.1")):
            sh("ip", "addr", "add", addr, "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
            sh("ip", "route", "add", "default", "via", via, ns=ns)
        for dev, addr in ((f"{c_if}b", "10.1.0.1/24"), (f"{s_if}b", "10.2.0.1/24")):
            sh("ip", "addr", "add", addr, "dev", dev, ns=router)
            sh("ip", "link", "set", dev, "up", ns=router)
        write_sysctl(router, "net.ipv4.ip_forward", 1)
        sh("nft", "-f", "-", ns=router, input=FORWARD_RULES)
        yield client, router, server


FORWARD_RULES = """
table inet ct_tune_test {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
  }
}
"""


def test_half_closed_flows_through_a_router_point_at_the_host_behind_it():
    n = _needed()
    host_count = read_sysctl(None, "net.netfilter.nf_conntrack_count")
    with _routed() as (client, router, server), _server(server):
        _half_close(client, router, "10.2.0.2", n)
        # the leak is on the server: its sockets sit in CLOSE_WAIT; the router has none
        assert _ss_count(server, "close-wait") >= n
        assert _ss_count(router, "close-wait") == 0
        report, found = _audit(router)
        assert report["facts"]["host"]["forwarding"] is True
        assert report["facts"]["sockets"]["close_wait"] == 0
        cw = found["close-wait-dominance"]
        ev = cw["evidence"]
        assert cw["severity"] == "info"
        assert ev["cw"]["class"] == "tcp/CLOSE_WAIT" and ev["cw"]["timeout_key"] == CW
        held = ev["cw"]["entries"]
        assert held >= 0.9 * n and ev["local"] == 0 and ev["elsewhere"] is True
        assert ("but only 0 sockets here are in CLOSE_WAIT: forwarded or NATed flows whose "
                "far end does not close (held 1 h each)") in cw["summary"]
        assert "runs on the host behind it" in cw["explanation"]
        # the what-if of the timeout, the one thing changeable here: at the kernel's 60 s
        # only the flows idle under a minute stay, those of the first aging step (the
        # next one looks idle 220 s)
        assert ev["w"]["proposed"] == 60
        assert ev["w"]["projected"] == pytest.approx(held / AGE_STEPS, rel=0.1)
        assert f"at 60 s: ~{ev['w']['projected']:,}" in cw["summary"]
    # the host's own table never saw this traffic
    assert abs(int(read_sysctl(None, "net.netfilter.nf_conntrack_count"))
               - int(host_count)) < 1000
