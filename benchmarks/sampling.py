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
see them come from a regular `pip install .`, which --install makes in a temporary
virtualenv; an editable install (`pip install -e`, as README's set-up makes) adds its
path hooks to every start-up, about 20 ms.  Timed runs may write bytecode (the
benchmark drops PYTHONDONTWRITEBYTECODE), as an installed copy has it.

Run it with no other large conntrack table on the host: every read of
/proc/net/nf_conntrack walks the kernel's one hash table, entries of all
namespaces included (and reaps expired ones it meets), so a leftover table
elsewhere slows both sides and skews the ratio.

    sudo .venv/bin/python benchmarks/sampling.py [--sizes 25000 250000] [--rounds 5]
        [--python /path/to/venv/bin/python | --install] [--against REV] [--stat min]

--against REV also times that git revision's `collect` (its ct_tune and rules exported
with git archive) in the same rounds, ours, theirs and cat taking turns: the machine's
speed drifts by a third between runs here, so only sides timed together compare.
With --install, REV is installed into a virtualenv of its own the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator

import benchlib

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


def timed(cmd: list[str], ns: str, cwd: str | None = None) -> tuple[float, int, float, float]:
    """Wall time, peak RSS (KiB), user and system CPU seconds of one run of cmd inside ns."""
    return tuple(benchlib.run(["ip", "netns", "exec", ns, *cmd], cwd=cwd))


@contextlib.contextmanager
def table_namespace(size: int) -> Iterator[tuple[str, int]]:
    """(name, nf_conntrack_count) of a new network namespace holding a real table of
    `size` unreplied UDP entries (loopback only); deleted on the way out."""
    ns = f"ctbench-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("nft", "-f", "-", ns=ns, input=NFT.encode())
        sh("sh", "-c", "echo 3600 > /proc/sys/net/netfilter/nf_conntrack_udp_timeout", ns=ns)
        sh(sys.executable, "-c", FILL, str(size), ns=ns)
        yield ns, int(sh("cat", "/proc/sys/net/netfilter/nf_conntrack_count", ns=ns,
                         capture_output=True).stdout)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def bench(size: int, rounds: int, python: str, against: str | None = None,
          stat: str = "median", their_python: str | None = None) -> dict:
    """The figures at one table size; with `against` (a directory holding another
    revision's ct_tune) or `their_python` (an interpreter with it installed), its collect
    too, in the same rounds as ours and cat."""
    with table_namespace(size) as (ns, count):
        ct = [python, "-m", "ct_tune"]
        sysctl = ["sh", "-c", "sysctl -a > /dev/null"]
        pairs = {
            "sample": ([*ct, "collect", "--duration", "0"],
                       ["sh", "-c", "cat /proc/net/nf_conntrack > /dev/null"]),
            "audit": ([*ct, "audit", "--no-sample"], sysctl),
            "imports": ([python, "-c", "import click, jinja2.sandbox, tabulate"], sysctl),
        }
        timed([*ct, "audit", "--no-sample"], ns)  # fill the expression cache
        # name -> (command, working directory): `python -m` imports ct_tune from there first
        runs: dict[str, dict[str, tuple[list[str], str | None]]] = {
            name: {"ours": (ours, None), "base": (base, None)}
            for name, (ours, base) in pairs.items()}
        if their_python:
            theirs = [their_python, "-m", "ct_tune", "collect", "--duration", "0"]
            runs["sample"]["theirs"] = (theirs, None)
            timed(theirs, ns)
        elif against:
            runs["sample"]["theirs"] = (pairs["sample"][0], against)
            timed(pairs["sample"][0], ns, against)  # its bytecode compiled before timing
        out: dict = {"entries": count}
        for name, cmds in runs.items():
            got: dict[str, list[tuple[float, int, float, float]]] = {k: [] for k in cmds}
            for _ in range(rounds):  # alternate so drift hits every side equally
                for side, (cmd, cwd) in cmds.items():
                    got[side].append(timed(cmd, ns, cwd))

            out[name] = _medians(got, stat)
        return out


def _medians(got: dict[str, list[tuple[float, int, float, float]]], stat: str = "median"
             ) -> dict[str, dict]:
    """Per side: median (or least) wall time, its ratio to the baseline's, peak RSS, median
    (or least) CPU.  The least is the steadier figure for CPU-bound work on a machine whose
    neighbours only ever add time; the median is the one users meet."""
    pick = min if stat == "min" else statistics.median

    def med(side: str, i: int) -> float:
        return pick(r[i] for r in got[side])

    return {side: {"seconds": round(med(side, 0), 3),
                   "ratio": round(med(side, 0) / med("base", 0), 2),
                   "peak_rss_mib": round(max(r[1] for r in got[side]) / 1024, 1),
                   "user_s": round(med(side, 2), 3), "sys_s": round(med(side, 3), 3)}
            for side in got}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25000, 250000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter whose ct_tune is timed (default: this one)")
    ap.add_argument("--install", action="store_true",
                    help="time this checkout installed with `pip install .` in a temporary "
                         "virtualenv, as users run it")
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="figure of the rounds to print (min: the least, steadier on a "
                         "noisy machine)")
    ap.add_argument("--against", metavar="REV",
                    help="also time this git revision's collect in the same rounds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark builds a network namespace")
    # Users run ct-tune from an installation with its bytecode compiled: a
    # PYTHONDONTWRITEBYTECODE left in this environment (sudo would reset it, a root shell
    # keeps it) makes every timed run compile the checkout's modules again, about 0.06 s
    # of user time that no user pays.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    venv = tempfile.TemporaryDirectory(prefix="ct-sampling-venv-")
    their_python = None
    if args.install:
        args.python = benchlib.install(os.path.join(venv.name, "ours"))
        if args.against:  # theirs installed the same way, so only the code differs
            their_python = benchlib.install(os.path.join(venv.name, "theirs"), args.against)
        # `python -m` imports from the working directory first: run where no ct_tune is
        os.chdir(venv.name)
    elif args.python == sys.executable:  # this checkout, even if not installed here
        os.environ["PYTHONPATH"] = benchlib.CHECKOUT
    print(f"python: {args.python}{' (pip install . of this checkout)' if args.install else ''}"
          f"; {args.stat} of {args.rounds} rounds")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'entries':>8} {'what':<16} {'ct-tune':>8} {'baseline':>9} {'ratio':>6} "
          f"{'peak RSS':>9} {'ct usr':>7} {'ct sys':>7} {'base usr':>8} {'base sys':>8}")
    with tempfile.TemporaryDirectory(prefix="ct-sampling-") as tmp:
        if args.against and not their_python:
            benchlib.export(args.against, tmp)
        for size in args.sizes:
            r = bench(size, args.rounds, args.python, tmp if args.against else None,
                      args.stat, their_python)
            for name, base in (("sample", "cat /proc/net/nf_conntrack"),
                               ("audit", "sysctl -a"), ("imports", "sysctl -a")):
                b = r[name]["base"]
                sides = [("ours", name)]
                if "theirs" in r[name]:
                    sides.append(("theirs", f"{name}@{args.against}"))
                for side, label in sides:
                    x = r[name][side]
                    print(f"{r['entries']:>8} {label:<16} {x['seconds']:>7.3f}s "
                          f"{b['seconds']:>8.3f}s {x['ratio']:>6.2f} {x['peak_rss_mib']:>7.1f}MiB "
                          f"{x['user_s']:>6.3f}s {x['sys_s']:>6.3f}s {b['user_s']:>7.3f}s "
                          f"{b['sys_s']:>7.3f}s   (baseline: {base})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
