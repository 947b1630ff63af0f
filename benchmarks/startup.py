#!/usr/bin/env python3
"""Start-up benchmark (run as root): this checkout's ct-tune against a baseline revision's.

In a private, empty network namespace (its own conntrack table, no entries) it times,
round-robin in the same run so drift on a shared machine hits every command alike:

- `python -c pass`: the interpreter alone, the floor;
- `python -c "import click"`: the floor of any click command line;
- `ct-tune collect --duration 0` (to stdout, and with `-o FILE` as a fleet writes its
  snapshots) and `ct-tune audit --no-sample`, each with the baseline revision's code
  (default: main, exported with `git archive` into a temporary directory) and with
  this checkout's.

Each ct-tune command's figure is what it adds to `python -c pass` (median over the
rounds of wall-clock time, and of user + system CPU time of the child); the last
column is this checkout's added time over the baseline's, and the median of the
per-round differences (checkout minus baseline, run back to back: steadier than the
difference of the medians when neighbours load the machine in bursts).  On an empty table
collect's added time is its fixed start-up cost (imports, facts, the empty sample,
the JSON), which issue 11's speed target pays on top of parsing the table.  Audits
use a warm expression cache of their own (one untimed audit per revision first).
Bytecode is written on the first, untimed run (PYTHONDONTWRITEBYTECODE is dropped):
an installed copy has it.  A benchmark, not a test: it never fails on a slow machine.

    sudo .venv/bin/python benchmarks/startup.py [--rounds 20] [--baseline main]
        [--python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile

import benchlib

CHECKOUT = benchlib.CHECKOUT
CLONE_NEWNET = 0x40000000  # <linux/sched.h>


def enter_empty_namespace() -> None:
    """Move this process (and so every child) into a new network namespace: an empty
    conntrack table of its own, gone when the last process in it exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise SystemExit(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and user + system CPU seconds of one run of cmd, output to /dev/null."""
    r = benchlib.run(cmd, env)
    return r.seconds, r.user + r.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--baseline", default="main", help="git revision to compare against")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter to time (default: this one)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark makes a network namespace")
    enter_empty_namespace()
    with tempfile.TemporaryDirectory(prefix="ct-startup-") as tmp:
        base_dir = os.path.join(tmp, "baseline")
        os.mkdir(base_dir)
        benchlib.export(args.baseline, base_dir)
        # `python -m` puts the working directory first on sys.path: from inside the
        # checkout, the baseline's PYTHONPATH would lose to the checkout's own ct_tune
        os.chdir(tmp)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        envs = {}
        for name, path in (("baseline", base_dir), ("checkout", CHECKOUT)):
            cache = os.path.join(tmp, f"cache-{name}")
            os.mkdir(cache, 0o700)
            envs[name] = {**env, "PYTHONPATH": path, "CT_TUNE_CACHE_DIR": cache}
        py = args.python
        for name, path in (("baseline", base_dir), ("checkout", CHECKOUT)):
            where = subprocess.run([args.python, "-c", "import ct_tune; print(ct_tune.__file__)"],
                                   env=envs[name], capture_output=True, text=True,
                                   check=True).stdout.strip()
            if not where.startswith(path + os.sep):
                raise SystemExit(f"{name}: ct_tune comes from {where}, not from {path}")
        ct = [py, "-m", "ct_tune"]
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "pass": ([py, "-c", "pass"], env),
            "import click": ([py, "-c", "import click"], env),
        }
        for what, argv in (("collect", ["collect", "--duration", "0"]),
                           ("collect -o", ["collect", "--duration", "0", "-o",
                                           os.path.join(tmp, "host.json")]),
                           ("audit", ["audit", "--no-sample"])):
            for name in ("baseline", "checkout"):
                commands[f"{what} {name}"] = ([*ct, *argv], envs[name])
        for cmd, cmd_env in commands.values():  # bytecode, expression caches
            timed(cmd, cmd_env)
        wall: dict[str, list[float]] = {k: [] for k in commands}
        cpu: dict[str, list[float]] = {k: [] for k in commands}
        print(f"python: {py}; baseline: {args.baseline}; rounds: {args.rounds}")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for _ in range(args.rounds):
            for key, (cmd, cmd_env) in commands.items():
                t, c = timed(cmd, cmd_env)
                wall[key].append(t)
                cpu[key].append(c)
        med_wall = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"{'command':<20} {'wall':>8} {'cpu':>8} {'wall-pass':>10} {'cpu-pass':>9}"
              f" {'added vs baseline':>18}")
        for key in commands:
            added_wall = med_wall[key] - med_wall["pass"]
            added_cpu = med_cpu[key] - med_cpu["pass"]
            line = (f"{key:<20} {med_wall[key] * 1000:>6.1f}ms {med_cpu[key] * 1000:>6.1f}ms"
                    f" {added_wall * 1000:>8.1f}ms {added_cpu * 1000:>7.1f}ms")
            if key.endswith(" checkout"):
                base = key.replace(" checkout", " baseline")
                base_wall = med_wall[base] - med_wall["pass"]
                base_cpu = med_cpu[base] - med_cpu["pass"]
                line += (f"  wall x{added_wall / base_wall:.2f}, cpu x{added_cpu / base_cpu:.2f}"
                         if base_wall > 0 and base_cpu > 0 else "")
                # paired: the two ran back to back in each round, so a neighbour's burst
                # that slows a round shows in both and cancels out of the difference
                diff_wall = statistics.median(map(float.__sub__, wall[key], wall[base]))
                diff_cpu = statistics.median(map(float.__sub__, cpu[key], cpu[base]))
                line += f"; paired {diff_wall * 1000:+.1f}ms wall, {diff_cpu * 1000:+.1f}ms cpu"
            print(line)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
