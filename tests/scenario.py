"""The real-kernel scenarios of the project's issue 14, shared by the tests and by
benchmarks/scenarios.py (which prints their before and after for a person to read).

Each scenario builds its failure in throwaway network namespaces, measures it, runs
ct-tune as a user would (audit, then apply), and measures again.  Root only: callers skip
with a reason elsewhere (netns.require_netns).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from netns import require_netns, sh, write_sysctl

ROOT = Path(__file__).parent.parent
CT = [sys.executable, "-m", "ct_tune"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def ct(*args: str, ns: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """ct-tune as a user runs it, optionally inside a namespace."""
    cmd = ["ip", "netns", "exec", ns, *CT, *args] if ns else [*CT, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout,
                          check=False)


def ct_apply(*args: str, ns: str | None = None) -> subprocess.CompletedProcess:
    """ct-tune apply with a private, empty /var/lib (tmpfs in a private mount namespace),
    so its rollback state never lands on the host; in a namespace it writes live values
    only (the host's /etc is bind-mounted read-only, so a write there would fail)."""
    import shlex
    cmd = " ".join(shlex.quote(a) for a in [*CT, "apply", *args])
    script = ("mount -t tmpfs ct-tune-test /var/lib && mount --bind /etc /etc && "
              "mount -o remount,ro,bind /etc && " + cmd)
    full = ["unshare", "-m", "sh", "-c", script]
    if ns:
        full = ["ip", "netns", "exec", ns, *full]
    return subprocess.run(full, capture_output=True, text=True, timeout=120, check=False,
                          env=ENV)


def audit_json(*args: str, ns: str | None = None) -> dict:
    proc = ct("audit", "--format", "json", *args, ns=ns)
    assert proc.returncode in (0, 1, 2), proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def by_rule(report: dict) -> dict[str, dict]:
    return {f["rule"]: f for f in report["findings"]}


def finding_lines(report: dict, least: str = "info") -> list[str]:
    """One line per finding at `least` or above, from the JSON: what a person acts on."""
    order = ["ok", "info", "unknown", "warning", "critical"]
    return [f"{f['severity']:<8} {f['rule']}: {f['summary']}" for f in report["findings"]
            if order.index(f["severity"]) >= order.index(least)]


def stat_totals(ns: str | None = None) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack summed over CPUs (hex per-CPU lines), of a namespace."""
    text = sh("cat", "/proc/net/stat/nf_conntrack", ns=ns).stdout.splitlines()
    names = text[0].split()
    out = dict.fromkeys(names, 0)
    for line in text[1:]:
        for k, v in zip(names, line.split(), strict=True):
            out[k] += int(v, 16)
    return out


def count(ns: str | None = None) -> int:
    return int(sh("cat", "/proc/sys/net/netfilter/nf_conntrack_count", ns=ns).stdout)


@contextmanager
def namespaces(*roles: str) -> Iterator[dict[str, str]]:
    """Namespaces by role, lo up in each; deleted afterwards whatever happens."""
    require_netns()
    tag = uuid.uuid4().hex[:6]
    names = {r: f"ctt-{r}-{tag}" for r in roles}
    made: list[str] = []
    try:
        for name in names.values():
            sh("ip", "netns", "add", name)
            made.append(name)
            sh("ip", "link", "set", "lo", "up", ns=name)
        yield names
    finally:
        for name in made:
            sh("ip", "netns", "delete", name, check=False)


def veth(a: str, a_addr: str, b: str, b_addr: str) -> None:
    """A veth pair between namespaces a and b, addresses in one /24."""
    tag = uuid.uuid4().hex[:6]
    sh("ip", "link", "add", f"va{tag}", "netns", a, "type", "veth", "peer", "name",
       f"vb{tag}", "netns", b)
    for ns, dev, addr in ((a, f"va{tag}", a_addr), (b, f"vb{tag}", b_addr)):
        sh("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
        sh("ip", "link", "set", dev, "up", ns=ns)


# --------------------------------------------------------------------------------------
# Scenario 1: the idle pooled connection behind a "NEW must be SYN" stateful rule.
# Scaled 1:720 (12 min of the story is 1 s here): keepalive 7,200 s -> 10 s, its 75 s
# interval -> 1 s (the least the kernel takes); an established timeout lowered to 1 h
# -> 5 s; the pool's connection idles 1 h 18 min -> 6.5 s.

SCALE = 720
KEEPALIVE = {"net.ipv4.tcp_keepalive_time": 10, "net.ipv4.tcp_keepalive_intvl": 1,
             "net.ipv4.tcp_keepalive_probes": 9}
EST = "net.netfilter.nf_conntrack_tcp_timeout_established"
EST_SHORT = 5
IDLE = 6.5
PORT = 2222
SERVER_ADDR, CLIENT_ADDR = "10.77.0.2", "10.77.0.1"

# the article's `iptables -m state --state NEW -m tcp --tcp-flags PSH PSH -j DROP`, in nft
SERVER_NFT = f"""
table inet pool {{
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp dport {PORT} ct state new tcp flags & psh == psh counter name psh_drop drop
    ct state established,related accept
  }}
  counter psh_drop {{ }}
}}
"""

SERVER = textwrap.dedent(f"""
    import socket, threading
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("{SERVER_ADDR}", {PORT}))
    srv.listen(16)
    print("listening", flush=True)
    def serve(c):
        while True:
            data = c.recv(100)
            if not data:
                return
            c.sendall(b"pong:" + data)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    """)

# One pooled connection: a request, IDLE seconds of silence, the same request again.
# It prints "ready" after the first answer (the test samples the table then), and at the
# end a JSON line: the second answer or the error, and the socket's retransmissions
# (struct tcp_info's tcpi_total_retrans, include/uapi/linux/tcp.h, at byte 100).
CLIENT = textwrap.dedent(f"""
    import json, socket, struct, sys, time
    idle, give_up_ms = float(sys.argv[1]), int(sys.argv[2])
    s = socket.create_connection(("{SERVER_ADDR}", {PORT}), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, give_up_ms)
    s.sendall(b"1")
    first = s.recv(100).decode()
    t0 = time.monotonic()
    print("ready", first, flush=True)
    sys.stdin.readline()
    time.sleep(max(0.0, idle - (time.monotonic() - t0)))
    s.settimeout(give_up_ms / 1000 + 5)
    out = {{"first": first, "idle": round(time.monotonic() - t0, 2)}}
    start = time.monotonic()
    try:
        s.sendall(b"2")
        out["second"] = s.recv(100).decode() or "closed"
    except OSError as e:
        out["second"] = None
        out["error"] = e.strerror or type(e).__name__
    out["waited"] = round(time.monotonic() - start, 2)
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    out["retrans"] = struct.unpack_from("I", info, 100)[0]
    print(json.dumps(out), flush=True)
    """)


def drop_counter(ns: str) -> int:
    out = json.loads(sh("nft", "-j", "list", "counter", "inet", "pool", "psh_drop",
                        ns=ns).stdout)
    return next(x["counter"]["packets"] for x in out["nftables"] if "counter" in x)


class IdlePool:
    """The two namespaces, the server, and one pooled connection at a time."""

    def __init__(self, ns: dict[str, str]) -> None:
        self.ns = ns
        veth(ns["client"], CLIENT_ADDR, ns["server"], SERVER_ADDR)
        for side in ("client", "server"):
            for key, value in KEEPALIVE.items():
                write_sysctl(ns[side], key, value)
        sh("nft", "-f", "-", ns=ns["server"], input=SERVER_NFT)
        write_sysctl(ns["server"], EST, EST_SHORT)
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", ns["server"], sys.executable, "-c", SERVER],
            stdout=subprocess.PIPE, text=True)
        assert self.server.stdout.readline().strip() == "listening"

    def close(self) -> None:
        self.server.kill()
        self.server.wait(timeout=10)

    def connection(self, while_idle=None, give_up_ms: int = 2000) -> dict:
        """One pooled connection's round: request, IDLE s idle (while_idle() runs at its
        start, the flow in the table), request again.  Returns the client's JSON plus the
        rule's drop counter rise and whatever while_idle returned."""
        dropped = drop_counter(self.ns["server"])
        client = subprocess.Popen(
            ["ip", "netns", "exec", self.ns["client"], sys.executable, "-c", CLIENT,
             str(IDLE), str(give_up_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            ready = client.stdout.readline()
            assert ready.startswith("ready pong:1"), ready
            seen = while_idle() if while_idle else None
            client.stdin.write("go\n")
            client.stdin.flush()
            out = json.loads(client.stdout.readline())
            client.wait(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        out["dropped"] = drop_counter(self.ns["server"]) - dropped
        out["seen"] = seen
        return out


def established_in_table(ns: str) -> list[str]:
    lines = sh("cat", "/proc/net/nf_conntrack", ns=ns).stdout.splitlines()
    return [x for x in lines if "ESTABLISHED" in x and f"dport={PORT}" in x]


def idle_pool(report=None) -> dict:
    """Scenario 1 from start to end; returns what was measured at each step."""
    with namespaces("client", "server") as ns:
        pool = IdlePool(ns)
        try:
            seen: dict = {}

            def audit_while_idle() -> None:
                seen["entries"] = established_in_table(ns["server"])
                seen["report"] = audit_json(ns=ns["server"])

            before = pool.connection(while_idle=audit_while_idle)
            before_count = count(ns["server"])
            applied = ct_apply(ns=ns["server"])
            est_after = int(sh("cat", "/proc/sys/" + EST.replace(".", "/"),
                               ns=ns["server"]).stdout)
            after = pool.connection()
            after_report = audit_json(ns=ns["server"])
            return {"before": before, "entries": seen["entries"], "report": seen["report"],
                    "applied": applied, "est_after": est_after, "after": after,
                    "after_report": after_report, "count_before": before_count}
        finally:
            pool.close()


# --------------------------------------------------------------------------------------
# Scenario 3: a table bloated by unreplied UDP under a raised udp_timeout (600 s, 20x the
# kernel's 30 s).  The workload is test_realkernel_diagnosis's: N_UDP flows whose ages
# are spread over the 600 s by letting the kernel age them (step k is sent while
# udp_timeout is 600 - 30 k).

UDP = "net.netfilter.nf_conntrack_udp_timeout"
RAISED = 600


# One process per workload (it runs in the namespace, so it writes the namespace's
# udp_timeout itself): the flows of test_realkernel_diagnosis, N_UDP / STEPS per step,
# each from its own socket, to 1,500 ports.
UDP_WORKLOAD = textwrap.dedent("""
    import socket, sys
    timeout, steps, per_step = (int(a) for a in sys.argv[1:4])
    path = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout"
    for k in range(steps):
        with open(path, "w") as f:
            f.write(str(max(0, timeout - 30 * k)))
        for i in range(per_step):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            # a source port of its own: two ephemeral ports alike to one port would be
            # one entry (about 1 run in 20 lost a flow that way)
            s.bind(("127.0.0.1", 10000 + k * per_step + i))
            s.sendto(b"x", ("127.0.0.2", 20000 + (k * per_step + i) % 1500))
            s.close()
    with open(path, "w") as f:
        f.write(str(timeout))
    """)


def _udp_workload(ns: str, timeout: int) -> None:
    """The same compressed workload under `timeout`: step k's flows are 30 k s old, so
    they get `timeout` - 30 k s (0: gone, the kernel keeps none of them)."""
    from test_realkernel_diagnosis import N_UDP, STEPS
    sh(sys.executable, "-c", UDP_WORKLOAD, str(timeout), str(STEPS), str(N_UDP // STEPS),
       ns=ns)


def udp_entries(ns: str) -> int:
    lines = sh("cat", "/proc/net/nf_conntrack", ns=ns).stdout.splitlines()
    return sum(1 for x in lines if " udp " in x)


def udp_bloat(rules_dir: Path) -> dict:
    """Scenario 3 from start to end (rules_dir: an empty directory for the pressure
    profile, see test_realkernel_diagnosis.pressure_profile)."""
    from netns import NFT_RULES
    from test_realkernel_diagnosis import pressure_profile
    pressure_profile(rules_dir)
    prof = ("--rules-dir", str(rules_dir), "--profile", "pressure")
    with namespaces("udp") as names:
        ns = names["udp"]
        sh("nft", "-f", "-", ns=ns, input=NFT_RULES)
        _udp_workload(ns, RAISED)
        out: dict = {"count_before": count(ns), "entries_before": udp_entries(ns)}
        out["report"] = audit_json(*prof, ns=ns)
        out["table"] = ct("audit", *prof, ns=ns).stdout
        out["explain"] = ct("audit", "--explain", *prof, ns=ns).stdout
        out["applied"] = ct_apply(*prof, ns=ns)
        out["udp_after"] = int(sh("cat", "/proc/sys/" + UDP.replace(".", "/"), ns=ns).stdout)
        # entries already tracked keep the deadline they were given (nf_ct_refresh sets it
        # per packet): they go within the old 600 s.  Stand-in for that wait: flush them,
        # then the same workload again under the applied value.
        sh("conntrack", "-F", ns=ns, check=False)
        _udp_workload(ns, out["udp_after"])
        out["count_after"] = count(ns)
        out["entries_after"] = udp_entries(ns)
        out["after_report"] = audit_json(*prof, ns=ns)
        out["after_table"] = ct("audit", *prof, ns=ns).stdout
        out["after_explain"] = ct("audit", "--explain", *prof, ns=ns).stdout
        return out


# --------------------------------------------------------------------------------------
# Scenario 2: table full.  nf_conntrack_max is global, each namespace's count is checked
# against it: the host's max is lowered (host-modifying: every value is restored), a
# namespace overflows it with TCP connections (assured, so early_drop cannot evict them:
# their SYNs are dropped), the host's ct-tune sees it through /proc/PID/net and applies.

NETFILTER = Path("/proc/sys/net/netfilter")
MAX = NETFILTER / "nf_conntrack_max"


def host_values() -> dict[str, str]:
    """Every writable host value under /proc/sys/net/netfilter, to restore afterwards
    (read in the host's namespace: this process's)."""
    out = {}
    for path in sorted(NETFILTER.iterdir()):
        if path.is_file() and path.stat().st_mode & 0o200:
            try:
                out[str(path)] = path.read_text()
            except OSError:
                continue
    return out


def restore_host(saved: dict[str, str]) -> list[str]:
    """Write back every value that differs; returns the keys it could not restore.
    max first: a value restored above it must never be refused."""
    failed = []
    for path in sorted(saved, key=lambda p: p != str(MAX)):
        try:
            if Path(path).read_text() != saved[path]:
                Path(path).write_text(saved[path])
        except OSError:
            failed.append(path)
    return [p for p in saved if Path(p).read_text() != saved[p]] or failed


def busiest_count() -> int:
    """The fullest table on this host now: its own, or any namespace's a process is in."""
    from ct_tune import nsview
    seen = nsview.scan(Path("/proc")) or {"list": []}
    counts = [count(), *(n["entries"] for n in seen["list"])]
    # named namespaces with no process in them (ip netns add), which /proc cannot show
    netns_dir = Path("/run/netns")
    for name in sorted(os.listdir(netns_dir)) if netns_dir.is_dir() else []:
        proc = sh("cat", "/proc/sys/net/netfilter/nf_conntrack_count", ns=name, check=False)
        if proc.returncode == 0 and proc.stdout.strip().isdigit():
            counts.append(int(proc.stdout))
    return max(counts)


# K TCP connections over loopback inside the namespace, fired at once (non-blocking);
# those whose SYN the full table drops keep retransmitting it while the process lives.
# Prints a JSON line once the connects have settled, then holds every socket until stdin
# closes.
TCP_FILL = textwrap.dedent("""
    import json, resource, socket, sys, threading, time
    k, port, settle = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    # both ends of k connections, the late arrivals, the interpreter's own (root may raise)
    need = max(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 2 * k + 4096)
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4096)
    held = []
    threading.Thread(target=lambda: [held.append(srv.accept()[0]) for _ in iter(int, 1)],
                     daemon=True).start()
    socks = []
    for i in range(k):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    def connected():
        n = 0
        for s in socks:
            try:
                s.getpeername()
                n += 1
            except OSError:
                pass
        return n
    # settled: all connected, or no progress for half a second after `settle` (at most 6 s)
    start, ok, last, since = time.monotonic(), 0, -1, time.monotonic()
    while time.monotonic() - start < 6:
        time.sleep(0.25)
        ok = connected()
        if ok == k:
            break
        if ok != last:
            last, since = ok, time.monotonic()
        elif time.monotonic() - start >= settle and time.monotonic() - since >= 0.5:
            break
    print(json.dumps({"attempted": k, "connected": ok}), flush=True)
    def knock():  # new clients keep arriving, one every 10 ms, each gives up after 0.5 s
        while True:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            time.sleep(0.01)
            threading.Timer(0.5, s.close).start()
    threading.Thread(target=knock, daemon=True).start()
    sys.stdin.read()
    """)


class Filler:
    """The workload, running in the namespace until closed."""

    def __init__(self, ns: str, k: int, port: int, settle: float = 1.0) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", TCP_FILL, str(k), str(port),
             str(settle)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=20)
            raise RuntimeError(f"the {k}-connection workload exited ({self.proc.returncode})")
        self.result = json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def kernel_log_table_full(ns: str) -> int | None:
    """The namespace's 'table full' lines in the kernel log (None where it cannot be
    read).  Outside init_net newer kernels name the namespace by inode, "nf_conntrack:
    table full in netns INODE, dropping packet" (nf_conntrack_core.c
    __nf_conntrack_alloc); older ones print no namespace, then every such line counts."""
    proc = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    ino = os.stat(f"/run/netns/{ns}").st_ino
    lines = [x for x in proc.stdout.splitlines() if "table full" in x and "dropping" in x]
    named = [x for x in lines if " in netns " in x]
    return sum(f"in netns {ino}," in x for x in named) if named else len(lines)


#: the largest max the test lowers to (its workload opens 2 x 1.5 x this many sockets)
MAX_SMALL = 16384


class HostTooBusy(Exception):
    """The host's own tables are too full to lower max for the test without harm."""


def table_full(tmp: Path, duration: int = 2) -> dict:
    """Scenario 2 from start to end.  Lowers the host's max; the caller must restore the
    host's values (restore_host) whatever happens, as this does too."""
    saved = host_values()
    out: dict = {"saved_max": int(saved[str(MAX)]), "timings": {}}
    t0 = time.monotonic()

    def lap(name: str) -> None:
        out["timings"][name] = round(time.monotonic() - t0, 1)
    try:
        with namespaces("full") as names:
            ns = names["full"]
            sh("nft", "-f", "-", ns=ns, input=_nft_accept())
            # the whole host first: every table must stay well below the small max
            busiest = busiest_count()
            small = max(2048, -(-(busiest + busiest // 2 + 1024) // 1024) * 1024)
            if small > MAX_SMALL:
                raise HostTooBusy(f"a table on this host holds {busiest} entries: lowering "
                                  f"max below that for the test would drop its flows")
            k = small + small // 2
            out.update(small=small, workload=k, log_before=kernel_log_table_full(ns))
            MAX.write_text(str(small))
            stat0, t_fill = stat_totals(ns), time.monotonic()
            lap("setup")
            fill = Filler(ns, k, 5001)
            lap("fill")
            try:
                out["before"] = {**fill.result, "count": count(ns)}
                out["ns_report"] = audit_json("--duration", str(duration), ns=ns)
                lap("ns audit")
                out["host_report"] = audit_json("--duration", str(duration))
                lap("host audit")
                stat1 = stat_totals(ns)
                out["before"].update(drop=stat1["drop"] - stat0["drop"],
                                     early_drop=stat1["early_drop"] - stat0["early_drop"],
                                     seconds=round(time.monotonic() - t_fill, 1))
                out["applied"] = ct_apply("--root", str(tmp))
                out["max_after"] = int(MAX.read_text())
                lap("apply")
            finally:
                fill.close()
            lap("close")
            out["log_after"] = kernel_log_table_full(ns)
            sh("conntrack", "-F", ns=ns, check=False)
            stat2 = stat_totals(ns)
            t = time.monotonic()
            fill = Filler(ns, k, 5002)
            try:
                out["after"] = {**fill.result, "count": count(ns)}
                lap("refill")
                out["after_report"] = audit_json("--duration", "1")
                lap("after audit")
            finally:
                fill.close()
            stat3 = stat_totals(ns)
            out["after"].update(drop=stat3["drop"] - stat2["drop"],
                                early_drop=stat3["early_drop"] - stat2["early_drop"],
                                seconds=round(time.monotonic() - t, 1))
        lap("end")
        return out
    finally:
        out["not_restored"] = restore_host(saved)


def _nft_accept() -> str:
    from netns import NFT_RULES
    return NFT_RULES
