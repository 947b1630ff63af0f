#!/usr/bin/env python3
"""Sampling benchmark (run as root): ct-tune against the kernel's own text generation.

Builds a network namespace with a real conntrack table of N UDP entries (loopback
only), then times, alternating in the same run, `ct-tune collect --duration 0`
(a full sample) against `cat /proc/net/nf_conntrack > /dev/null`, and
`ct-tune audit --no-sample` against `sysctl -a`.  Reports medians, their ratio,
and ct-tune's peak RSS (ru_maxrss of the child) at each size, and the CPU time of
each side (user and system time, from getrusage(RUSAGE_CHILDREN) before and after
each run: the child and everything it waited for, so ct-tune's dd(1) reader too).
The user time of `collect` is ct-tune's own parsing; the system time of `cat` is
the kernel printing the table.  A benchmark, not a test: it never fails on a slow
machine.

The "imports" row times only `python -c "import click, jinja2.sandbox, tabulate"`
against the same `sysctl -a`: the floor that no work of ct-tune's own can go under.
Audits run with a warm expression cache (the first, cold run is not timed).

--python picks the interpreter (and so the installation) to time: figures as users
see them come from a regular `pip install .`; an editable install (`pip install -e`)
adds its path hooks to every start-up.  Timed runs may write bytecode (the
benchmark drops PYTHONDONTWRITEBYTECODE), as an installed copy has it.

Run it with no other large conntrack table on the host: every read of
/proc/net/nf_conntrack walks the kernel's one hash table, entries of all
namespaces included (and reaps expired ones it meets), so a leftover table
elsewhere slows both sides and skews the ratio.

    sudo .venv/bin/python benchmarks/sampling.py [--sizes 25000 250000] [--rounds 5]
        [--python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import uuid

import childtime

FILL = """
import socket, sys
n = int(sys.argv[1]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sent = 0
for a in range(1, 255):
    for port in range(1024, 65535):
        if sent >= n: raise SystemExit
        s.sendto(b"x", (f"127.0.0.{a}", port)); sent += 1
"""
NFT = ("table inet bench {\n chain out {\n  type filter hook output priority 0; policy accept;\n"
       "  ct state established accept\n }\n}\n")


def sh(*cmd: str, ns: str | None = None, **kw) -> subprocess.CompletedProcess:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    return subprocess.run(full, check=True, **kw)


def timed(cmd: list[str], ns: str) -> tuple[float, int, float, float]:
    """Wall time, peak RSS (KiB), user and system CPU seconds of one run of cmd inside ns."""
    return tuple(childtime.run(["ip", "netns", "exec", ns, *cmd]))


def bench(size: int, rounds: int, python: str) -> dict:
    ns = f"ctbench-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("nft", "-f", "-", ns=ns, input=NFT.encode())
        sh("sh", "-c", "echo 3600 > /proc/sys/net/netfilter/nf_conntrack_udp_timeout", ns=ns)
        sh(sys.executable, "-c", FILL, str(size), ns=ns)
        count = int(sh("cat", "/proc/sys/net/netfilter/nf_conntrack_count", ns=ns,
                       capture_output=True).stdout)
        ct = [python, "-m", "ct_tune"]
        sysctl = ["sh", "-c", "sysctl -a > /dev/null"]
        pairs = {
            "sample": ([*ct, "collect", "--duration", "0"],
                       ["sh", "-c", "cat /proc/net/nf_conntrack > /dev/null"]),
            "audit": ([*ct, "audit", "--no-sample"], sysctl),
            "imports": ([python, "-c", "import click, jinja2.sandbox, tabulate"], sysctl),
        }
        timed([*ct, "audit", "--no-sample"], ns)  # fill the expression cache
        out: dict = {"entries": count}
        for name, (ours, base) in pairs.items():
            t_ours, t_base, rss, cpu_ours, cpu_base = [], [], [], [], []
            for _ in range(rounds):  # alternate so drift hits both equally
                t, r, user, system = timed(ours, ns)
                t_ours.append(t)
                rss.append(r)
                cpu_ours.append((user, system))
                t, _, user, system = timed(base, ns)
                t_base.append(t)
                cpu_base.append((user, system))
            m_ours, m_base = statistics.median(t_ours), statistics.median(t_base)

            def med(pairs: list, i: int) -> float:
                return round(statistics.median(p[i] for p in pairs), 3)

            out[name] = {"ct_tune_s": round(m_ours, 3), "baseline_s": round(m_base, 3),
                         "ratio": round(m_ours / m_base, 2),
                         "peak_rss_mib": round(max(rss) / 1024, 1),
                         "ct_tune_user_s": med(cpu_ours, 0), "ct_tune_sys_s": med(cpu_ours, 1),
                         "baseline_user_s": med(cpu_base, 0),
                         "baseline_sys_s": med(cpu_base, 1)}
        return out
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25000, 250000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter whose ct_tune is timed (default: this one)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark builds a network namespace")
    # Users run ct-tune from an installation with its bytecode compiled: a
    # PYTHONDONTWRITEBYTECODE left in this environment (sudo would reset it, a root shell
    # keeps it) makes every timed run compile the checkout's modules again, about 0.06 s
    # of user time that no user pays.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.python == sys.executable:  # this checkout, even if not installed here
        os.environ["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"python: {args.python}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'entries':>8} {'what':<7} {'ct-tune':>8} {'baseline':>9} {'ratio':>6} "
          f"{'peak RSS':>9} {'ct usr':>7} {'ct sys':>7} {'base usr':>8} {'base sys':>8}")
    for size in args.sizes:
        r = bench(size, args.rounds, args.python)
        for name, base in (("sample", "cat /proc/net/nf_conntrack"), ("audit", "sysctl -a"),
                           ("imports", "sysctl -a")):
            x = r[name]
            print(f"{r['entries']:>8} {name:<7} {x['ct_tune_s']:>7.3f}s {x['baseline_s']:>8.3f}s "
                  f"{x['ratio']:>6.2f} {x['peak_rss_mib']:>7.1f}MiB "
                  f"{x['ct_tune_user_s']:>6.3f}s {x['ct_tune_sys_s']:>6.3f}s "
                  f"{x['baseline_user_s']:>7.3f}s {x['baseline_sys_s']:>7.3f}s"
                  f"   (baseline: {base})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
