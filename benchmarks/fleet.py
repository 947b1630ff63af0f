#!/usr/bin/env python3
"""Fleet benchmark: `ct-tune fleet` over many snapshots against one `audit --facts` each.

Builds real snapshots first: `ct-tune collect` on this machine and on every captured
tree in tests/hosts (through --procfs/--sysfs, modes restored as the tests do), then
N varied copies of them, deterministically (seeded): a distinct host name, and
nf_conntrack_max, the entry count, the TCP established / CLOSE_WAIT and UDP timeouts
and the drop counter drawn from realistic choices, so hosts differ the way a fleet's
do (most of them in a few values).  Then, in the same run:

- `ct-tune fleet DIR` over the first 1,000 snapshots (one command);
- `ct-tune audit --facts FILE` once per snapshot, each its own process, over a
  subset (--audits, default 100) whose time is scaled to 1,000 (the output says so);
- the ratio of the two (the target is at least 20x);
- `ct-tune fleet DIR` over all N (default 10,000; the target is under 20 s).

Every ct-tune process runs with the same private, warm expression cache
(CT_TUNE_CACHE_DIR; one untimed audit fills it first), with its output to /dev/null;
fleet uses its default worker processes (one per CPU).  Each figure is wall-clock time
and CPU time (user + system of the child and its workers, from getrusage), with the
load average before and after: on a shared machine the clock says more about the
neighbours than about ct-tune.  A benchmark, not a test: it reports and never fails on
a slow machine.

    .venv/bin/python benchmarks/fleet.py [--hosts 10000] [--audits 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ROOT / "tests" / "hosts"

MAXES = (65536, 131072, 262144, 524288, 1048576, 2097152)
FILL = (0.001, 0.02, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.97, 1.0)
ESTABLISHED = (432000, 432000, 432000, 86400, 7440, 3600)
CLOSE_WAIT = (60, 60, 3600)
UDP = (30, 30, 60, 120)


def ct_tune(*args: str, env: dict[str, str], stdout: Any = subprocess.DEVNULL
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ct_tune", *args], env=env, stdout=stdout,
                          stderr=subprocess.DEVNULL, check=False)


def seeds(work: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """Real snapshots: this machine's and every captured tree's."""
    sys.path.insert(0, str(ROOT))
    from ct_tune.capture import apply_modes

    out = work / "seeds"
    out.mkdir()
    made = []
    ct_tune("collect", "-o", str(out / "this-machine.json"), env=env)
    made.append(out / "this-machine.json")
    for tree in sorted(p for p in HOSTS.iterdir() if (p / "proc").is_dir()):
        copy = work / "trees" / tree.name
        shutil.copytree(tree, copy, symlinks=True)
        apply_modes(copy)
        target = out / f"{tree.name}.json"
        ct_tune("collect", "--procfs", str(copy / "proc"), "--sysfs", str(copy / "sys"),
                "-o", str(target), env=env)
        if target.exists():
            made.append(target)
    return [json.loads(p.read_text()) for p in made]


def _set(facts: dict[str, Any], key: str, value: int) -> None:
    entry = facts["sysctl"].get(key)
    if entry is not None and isinstance(entry.get("value"), int):
        entry["value"] = value


def vary(base: dict[str, Any], n: int) -> dict[str, Any]:
    """Snapshot n of the fleet: a copy of a seed with its own name and values."""
    rng = random.Random(n)
    facts = json.loads(json.dumps(base))
    facts["host"]["hostname"] = f"host-{n:05d}"
    limit = rng.choice(MAXES)
    _set(facts, "net.netfilter.nf_conntrack_max", limit)
    _set(facts, "net.nf_conntrack_max", limit)
    _set(facts, "net.netfilter.nf_conntrack_count", int(limit * rng.choice(FILL)))
    _set(facts, "net.netfilter.nf_conntrack_tcp_timeout_established", rng.choice(ESTABLISHED))
    _set(facts, "net.netfilter.nf_conntrack_tcp_timeout_close_wait", rng.choice(CLOSE_WAIT))
    _set(facts, "net.netfilter.nf_conntrack_udp_timeout", rng.choice(UDP))
    stat = facts.get("stat")
    if stat and "drop" in stat.get("counters", {}):
        stat["counters"]["drop"] = rng.choice((0, 0, 0, 0, 17, 12000))
    return facts


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall-clock seconds, CPU seconds (user + system, the child and its workers), exit."""
    cpu, start = _cpu(), time.perf_counter()
    rc = ct_tune(*args, env=env).returncode
    return time.perf_counter() - start, _cpu() - cpu, rc


def _load() -> str:
    return (f"{len(os.sched_getaffinity(0))} CPUs, load average "
            + " ".join(f"{x:.1f}" for x in os.getloadavg()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=10_000, help="snapshots in the big run")
    ap.add_argument("--audits", type=int, default=100,
                    help="separate audit --facts runs timed (scaled to 1,000)")
    ap.add_argument("--keep", metavar="DIR", help="build the snapshots here and keep them")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="ct-tune-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CT_TUNE_CACHE_DIR": str(work / "cache")}
    (work / "cache").mkdir(exist_ok=True)
    try:
        bases = seeds(work, env)
        small, big = work / "fleet-1000", work / f"fleet-{a.hosts}"
        small.mkdir()
        big.mkdir()
        for n in range(max(a.hosts, 1000)):
            text = json.dumps(vary(bases[n % len(bases)], n), indent=1)
            name = f"host-{n:05d}.json"
            if n < a.hosts:
                (big / name).write_text(text)
            if n < 1000:
                (small / name).write_text(text)
        print(f"{len(bases)} real seed snapshots (this machine and tests/hosts), "
              f"{max(a.hosts, 1000):,} varied copies in {work}")
        files = sorted(small.iterdir())
        ct_tune("audit", "--facts", str(files[0]), env=env)  # fills the expression cache
        print(f"machine: {_load()}")
        fleet_s, fleet_cpu, rc = timed(["fleet", "--format", "json", str(small)], env)
        print(f"fleet, 1,000 snapshots, one command: {fleet_s:8.2f} s "
              f"(CPU {fleet_cpu:.2f} s, exit {rc})")
        cpu, start = _cpu(), time.perf_counter()
        for f in files[:a.audits]:
            ct_tune("audit", "--facts", str(f), "--format", "json", env=env)
        scale = 1000 / a.audits
        audit_s = (time.perf_counter() - start) * scale
        audit_cpu = (_cpu() - cpu) * scale
        print(f"audit --facts, {a.audits:,} separate processes timed, scaled x{scale:g} to "
              f"1,000: {audit_s:8.2f} s (CPU {audit_cpu:.2f} s)")
        print(f"ratio: fleet is {audit_s / fleet_s:.1f}x faster by the clock, "
              f"{audit_cpu / fleet_cpu:.1f}x by CPU time (target: at least 20x)")
        big_s, big_cpu, rc = timed(["fleet", "--format", "json", str(big)], env)
        print(f"fleet, {a.hosts:,} snapshots, one command: {big_s:8.2f} s "
              f"(CPU {big_cpu:.2f} s, exit {rc}; target: under 20 s)")
        print(f"machine: {_load()}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
