#!/usr/bin/env python3
"""In-process benchmark of flowparse.scan_block: this tree's against another git revision's.

Builds a 250,000-line table in the kernel's procfs layout (mostly UDP [UNREPLIED], as a
DNS or test load fills it; and a mixed variant: tcp ESTABLISHED/TIME_WAIT, udp replied
and [ASSURED], ipv6 icmpv6, zone=0 throughout), cuts it in blocks as ctsource reads it,
and times every block through scan_block, the two versions alternating in the same run
(best of --rounds, process CPU time, the cyclic collector off as feed_blocks has it).
The other version is the file `git show REV:ct_tune/flowparse.py` gives, imported as a
module of its own.  A benchmark, not a test: it never fails on a slow machine; it only
checks the two versions return the same columns.

    .venv/bin/python benchmarks/scan.py [--rev main] [--lines 250000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import io
import pathlib
import random
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ct_tune import ctsource, flowparse  # noqa: E402


def udp_table(n: int, seed: int = 1) -> str:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        a, sport, dport = 2 + i % 250, rnd.randrange(1024, 65536), rnd.randrange(1024, 65536)
        out.append(f"ipv4     2 udp      17 {rnd.randrange(3500, 3600)} src=127.0.0.1 "
                   f"dst=127.0.0.{a} sport={sport} dport={dport} [UNREPLIED] src=127.0.0.{a} "
                   f"dst=127.0.0.1 sport={dport} dport={sport} mark=0 zone=0 use=2\n")
    return "".join(out)


def mixed_table(n: int, seed: int = 2) -> str:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        dst = f"10.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(250)}"
        sport = rnd.randrange(1024, 65536)
        kind = rnd.randrange(6)
        if kind <= 1:
            state, ttl = (("ESTABLISHED", rnd.randrange(432000)) if kind == 0
                          else ("TIME_WAIT", rnd.randrange(120)))
            out.append(f"ipv4     2 tcp      6 {ttl} {state} src=10.9.0.1 dst={dst} "
                       f"sport={sport} dport={rnd.choice([443, 80, 22])} src={dst} "
                       f"dst=10.9.0.1 sport=443 dport={sport} [ASSURED] mark=0 zone=0 use=2\n")
        elif kind <= 3:
            unrep = "[UNREPLIED] " if kind == 2 else ""
            assured = "[ASSURED] " if kind == 3 and rnd.random() < 0.5 else ""
            out.append(f"ipv4     2 udp      17 {rnd.randrange(181)} src=10.9.0.1 dst={dst} "
                       f"sport={sport} dport=53 {unrep}src={dst} dst=10.9.0.1 sport=53 "
                       f"dport={sport} {assured}mark=0 zone=0 use=2\n")
        elif kind == 4:
            out.append(f"ipv6     10 udp      17 {rnd.randrange(31)} src=fd00::1 "
                       f"dst=fd00::{rnd.randrange(1 << 16):x} sport={sport} dport=123 "
                       f"src=fd00::2 dst=fd00::1 sport=123 dport={sport} mark=0 zone=0 use=2\n")
        else:
            out.append(f"ipv6     10 icmpv6   58 {rnd.randrange(31)} src=fe80::1 "
                       f"dst=fe80::{rnd.randrange(1 << 16):x} type=128 code=0 "
                       f"id={rnd.randrange(65536)} [UNREPLIED] src=fe80::2 dst=fe80::1 "
                       f"type=129 code=0 id=7 mark=0 zone=0 use=2\n")
    return "".join(out)


def load_revision(rev: str):
    """flowparse.py as git revision `rev` has it, as a module of its own."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:ct_tune/flowparse.py"],
                         capture_output=True, text=True, check=True).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / "flowparse_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("flowparse_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu(fn, blocks: list[str]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for block in blocks:
            fn(block)
        return time.process_time() - start
    finally:
        gc.enable()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="main", help="the revision to compare with (main)")
    ap.add_argument("--lines", type=int, default=250_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--table", type=pathlib.Path,
                    help="also time a captured table (e.g. a copy of /proc/net/nf_conntrack)")
    args = ap.parse_args()
    old = load_revision(args.rev)
    tables = {"udp unreplied": udp_table(args.lines), "mixed": mixed_table(args.lines)}
    if args.table:
        tables[str(args.table)] = args.table.read_text(errors="replace")
    print(f"scan_block, {args.rev} vs this tree: CPU seconds per table, best of {args.rounds}")
    print(f"{'table':24} {'lines':>8} {args.rev:>8} {'new':>8} {'new/old':>8}")
    for name, text in tables.items():
        blocks = list(ctsource._blocks(io.StringIO(text)))
        for block in blocks:
            a, b = old.scan_block(block), flowparse.scan_block(block)
            if a is None or b is None:
                raise SystemExit(f"{name}: a block fell back to scan_line ({a is None}, "
                                 f"{b is None}): not the case this benchmark measures")
            if [c for i, c in enumerate(a) if i not in (6, 7)] != [
                    c for i, c in enumerate(b) if i not in (6, 7)]:
                raise SystemExit(f"{name}: the two versions read a block differently")
        t_old, t_new = [], []
        for _ in range(args.rounds):  # alternating: both see the same machine load
            t_old.append(cpu(old.scan_block, blocks))
            t_new.append(cpu(flowparse.scan_block, blocks))
        o, n = min(t_old), min(t_new)
        print(f"{name[:24]:24} {text.count(chr(10)):>8} {o:>8.3f} {n:>8.3f} {n / o:>8.2f}")


if __name__ == "__main__":
    main()
