#!/usr/bin/env python3
"""Issue 14's scenarios on this machine's kernel, before and after ct-tune (run as root).

Runs the same code as tests/test_scenario_*.py (tests/scenario.py) and prints, for each
scenario, what a person would measure: packets dropped, retransmissions, table size,
drops per second, and ct-tune's finding lines (from its JSON) before and after
`ct-tune apply`.

    sudo .venv/bin/python benchmarks/scenarios.py                  # scenarios 1 and 3
    sudo .venv/bin/python benchmarks/scenarios.py --host-modifying # and 2: lowers the
                                                                   # host's max, restores it
    sudo .venv/bin/python benchmarks/scenarios.py --only 3 --explain   # + audit table/explain

Scenario 2 changes host-global values (nf_conntrack_max, and what `ct-tune apply` sets
on the host) for about half a minute and restores every one, even on failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import scenario  # noqa: E402  (tests/scenario.py, after the path is set)


def rows(title: str, table: list[tuple[str, object, object]]) -> None:
    print(f"\n== {title}")
    width = max(len(r[0]) for r in table)
    print(f"  {'':<{width}}  {'before':>14}  {'after':>14}")
    for name, before, after in table:
        print(f"  {name:<{width}}  {before!s:>14}  {after!s:>14}")


def findings(label: str, report: dict, least: str = "warning") -> None:
    print(f"  ct-tune findings {label} (status {report['status']}):")
    for line in scenario.finding_lines(report, least) or ["(none at " + least + " or above)"]:
        print("    " + line)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:.1f}" if seconds else "-"


def idle_pool() -> None:
    t0 = time.monotonic()
    r = scenario.idle_pool()
    b, a = r["before"], r["after"]
    rows(f"1. idle pooled connection (scaled 1:{scenario.SCALE}; established timeout "
         f"{scenario.EST_SHORT} s -> {r['est_after']} s, idle {scenario.IDLE} s)", [
             ("request after idle", b["second"] or b.get("error"), a["second"]),
             ("packets dropped (nft NEW+PSH rule)", b["dropped"], a["dropped"]),
             ("retransmissions (TCP_INFO)", b["retrans"], a["retrans"]),
             ("drops per second", rate(b["dropped"], b["waited"]), rate(a["dropped"],
                                                                       a["waited"])),
             ("wait for the answer (s)", b["waited"], a["waited"]),
             ("pooled flow in the audit's sample", len(r["entries"]), "-"),
         ])
    findings("before", r["report"])
    findings("after", r["after_report"], "info")
    print(f"  ({time.monotonic() - t0:.1f} s)")


def table_full() -> None:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        r = scenario.table_full(Path(tmp))
    b, a = r["before"], r["after"]
    rows(f"2. table full (host max {r['saved_max']} lowered to {r['small']}; "
         f"{r['workload']} connections from a namespace; apply on the host -> "
         f"max {r['max_after']}; restored: {not r['not_restored']})", [
             ("connections established", f"{b['connected']}/{b['attempted']}",
              f"{a['connected']}/{a['attempted']}"),
             ("namespace table size", b["count"], a["count"]),
             ("conntrack drop (stat)", b["drop"], a["drop"]),
             ("conntrack early_drop (stat)", b["early_drop"], a["early_drop"]),
             ("drops per second", rate(b["drop"], b["seconds"]), rate(a["drop"],
                                                                      a["seconds"])),
             ("'table full' log lines", _log(r), "-"),
         ])
    print("  inside the namespace:")
    findings("before", r["ns_report"])
    print("  on the host:")
    findings("before", r["host_report"])
    findings("after", r["after_report"], "info")
    print(f"  ({time.monotonic() - t0:.1f} s; steps {r['timings']})")


def _log(r: dict) -> object:
    if r["log_before"] is None or r["log_after"] is None:
        return "not readable"
    return r["log_after"] - r["log_before"]


def udp_bloat(explain: bool) -> None:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        r = scenario.udp_bloat(Path(tmp) / "rules")
    udp = scenario.by_rule(r["report"])["udp-timeout"]
    wi = udp["evidence"]["whatif"]
    rows(f"3. UDP bloat (udp_timeout {scenario.RAISED} s -> {r['udp_after']} s)", [
        ("table size (entries)", r["entries_before"], r["entries_after"]),
        ("what-if projection", "-", f"{wi['projected']} +- {wi['projected_margin']}"),
        ("nf_conntrack_count", r["count_before"], r["count_after"]),
    ])
    findings("before", r["report"])
    findings("after", r["after_report"], "info")
    if explain:
        for label, table, text in (("before", r["table"], r["explain"]),
                                   ("after", r["after_table"], r["after_explain"])):
            print(f"\n  --- ct-tune audit ({label} apply)\n{table}")
            print(f"  --- ct-tune audit --explain, udp-timeout ({label} apply)")
            print(excerpt(text, "udp-timeout") or "    (no udp-timeout finding)")
    print(f"  ({time.monotonic() - t0:.1f} s)")


def excerpt(text: str, rule: str) -> str:
    """The --explain block of one rule (from its header to the next blank-line header)."""
    lines = text.splitlines()
    start = next((i for i, x in enumerate(lines) if rule in x and "[" in x), None)
    if start is None:
        return ""
    end = next((i for i in range(start + 1, len(lines))
                if lines[i] and not lines[i].startswith(" ") and "[" in lines[i]
                and lines[i - 1] == ""), len(lines))
    return "\n".join(lines[start:end]).rstrip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host-modifying", action="store_true",
                    help="also run scenario 2 (lowers the host's nf_conntrack_max, restores it)")
    ap.add_argument("--only", type=int, choices=(1, 2, 3), action="append")
    ap.add_argument("--explain", action="store_true",
                    help="scenario 3: print the audit table and the udp-timeout explanation")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the scenarios build network namespaces")
    which = args.only or [1, 2, 3]
    if 2 in which and not args.host_modifying:
        print("(scenario 2 skipped: it changes the host's nf_conntrack_max; "
              "--host-modifying runs it)")
        which = [w for w in which if w != 2]
    for w in which:
        {1: idle_pool, 2: table_full, 3: lambda: udp_bloat(args.explain)}[w]()


if __name__ == "__main__":
    main()
