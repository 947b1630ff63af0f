#!/usr/bin/env python3
"""A real sampled table, audited (run as root): the `audit --explain` of a known flow mix.

Builds a throwaway network namespace, sets its UDP timeout to an overlong 300 s (an
admin's old setting), creates the mix of tests/flowmix.py on loopback (40 UDP
unreplied, 7 UDP replied, 5 TCP held ESTABLISHED, 3 TCP in TIME_WAIT, 2 ICMP), lets
it sit idle, then prints `ct-tune audit --explain` from inside the namespace: the
what-if projections say which of those flows the recommended timeouts would forget.

    sudo .venv/bin/python benchmarks/explain_demo.py [--idle 70] [--profile nat-gateway]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NFT = ("table inet demo {\n chain out {\n  type filter hook output priority 0; policy accept;\n"
       "  ct state established accept\n }\n}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=float, default=70.0, help="seconds the flows sit idle")
    ap.add_argument("--profile", default="nat-gateway")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the demo builds a network namespace")
    ns = f"ctdemo-{uuid.uuid4().hex[:6]}"
    ip = ["ip", "netns", "exec", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    mix = None
    try:
        subprocess.run([*ip, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*ip, "nft", "-f", "-"], input=NFT.encode(), check=True)
        subprocess.run([*ip, "sh", "-c", "echo 300 > "
                        "/proc/sys/net/netfilter/nf_conntrack_udp_timeout"], check=True)
        mix = subprocess.Popen([*ip, sys.executable, str(ROOT / "tests/flowmix.py")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if mix.stdout.readline().strip() != "ready":
            raise SystemExit("the flow mix did not start")
        time.sleep(args.idle)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([*ip, sys.executable, "-m", "ct_tune", "audit", "--explain",
                              "--profile", args.profile], env=env, text=True,
                             capture_output=True, check=False)
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
    finally:
        if mix is not None:
            mix.stdin.close()
            mix.wait(timeout=10)
        subprocess.run(["ip", "netns", "delete", ns], check=False)


if __name__ == "__main__":
    main()
