"""Sampling the live table: one pass over the dump into bounded aggregates.

Kept apart from facts.py because it is the expensive, optional part of
collecting (``--no-sample`` skips it) and the only part that may run an
external command (conntrack -L / -S when procfs lacks the files).
"""

from __future__ import annotations

import time
from typing import Any

from ct_tune import ctsource
from ct_tune.facts import Roots
from ct_tune.flows import FlowStats


def timeouts_of(facts: dict[str, Any]) -> dict[str, int]:
    """Current timeout sysctls by short name, for idle-time arithmetic."""
    out = {}
    for key, entry in facts["sysctl"].items():
        name = key.rsplit(".", 1)[-1]
        if "timeout" in name and isinstance(entry["value"], int):
            out[name] = entry["value"]
    return out


def sample(roots: Roots, facts: dict[str, Any], limit: int | None = None,
           source: str = "auto") -> dict[str, Any]:
    """Aggregate the table (at most `limit` entries, scaled to the count) into facts['flows']."""
    stats = FlowStats(timeouts_of(facts))
    start = time.monotonic()
    with ctsource.table_lines(roots, source) as (source, lines):
        stats.feed(lines, limit=limit)
    elapsed = time.monotonic() - start
    count = facts["sysctl"].get("net.netfilter.nf_conntrack_count", {}).get("value")
    summary = stats.summary(total=count if limit is not None else None)
    return {"source": source, "limit": limit, "seconds": round(elapsed, 3), **summary}


def fill_missing_stat(roots: Roots, facts: dict[str, Any]) -> None:
    """Counters from ctnetlink (conntrack -S) when /proc/net/stat/nf_conntrack is absent."""
    import shutil

    exe = shutil.which("conntrack")
    if facts.get("stat") is None and roots.live and facts["conntrack"]["loaded"] and exe:
        facts["stat"] = ctsource.conntrack_stats(exe)
