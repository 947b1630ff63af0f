#!/usr/bin/env python3
"""How much the kernel's printing of the table slows down while another CPU is busy
(run as root).

sampling.py compares `collect` with `cat /proc/net/nf_conntrack`.  collect's parsing runs
on the other CPU while the kernel prints the table for its dd(1) reader, so even when
parsing keeps up, the wall time is the kernel's printing *beside a busy CPU*.  On a
virtual machine whose vCPUs share physical cores (hyperthreads, an overcommitted host)
that is slower than printing alone, whoever is busy.  This times dd(1) reading the
table alone, beside a pure CPU loop (no memory traffic), and beside a loop copying
64 MiB buffers, in alternating rounds, and prints the medians and their ratios.

    sudo .venv/bin/python benchmarks/contention.py [--size 250000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import benchlib
from sampling import table_namespace

LOADS = {
    "alone": None,
    "beside a CPU loop": "import time\nt = time.time()\nwhile time.time() - t < 30: pass\n",
    "beside memcpy": ("import time\nt = time.time(); x = bytearray(64 << 20)\n"
                      "while time.time() - t < 30: y = bytes(x)\n"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=250000)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark builds a network namespace")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with table_namespace(args.size) as (ns, count):
        dd = ["ip", "netns", "exec", ns, "dd", "if=/proc/net/nf_conntrack", "of=/dev/null",
              "ibs=65536", "obs=262144", "status=none"]
        got: dict[str, list[float]] = {name: [] for name in LOADS}
        for _ in range(args.rounds):
            for name, load in LOADS.items():
                busy = None if load is None else subprocess.Popen([sys.executable, "-c", load])
                try:
                    if busy is not None:
                        time.sleep(0.1)  # running before the read starts
                    got[name].append(benchlib.run(dd).seconds)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
    alone = statistics.median(got["alone"])
    print(f"dd of a {count:,}-entry table, median of {args.rounds} rounds:")
    for name, times in got.items():
        med = statistics.median(times)
        print(f"  {name:<18} {med:6.3f} s  x{med / alone:.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
