"""Sampling the live table: one pass over the dump into bounded aggregates.

Kept apart from facts.py because it is the expensive, optional part of
collecting (``--no-sample`` skips it) and the only part that may run an
external command (conntrack -L / -S when procfs lacks the files).
"""

from __future__ import annotations

import time
from typing import Any

from ct_tune.facts import Roots
from ct_tune.sysctlkeys import short_name


def timeouts_of(facts: dict[str, Any]) -> dict[str, int]:
    """Current timeout sysctls by short name, for idle-time arithmetic."""
    out = {}
    for key, entry in facts["sysctl"].items():
        name = short_name(key)
        if "timeout" in name and isinstance(entry["value"], int):
            out[name] = entry["value"]
    return out


def sample(roots: Roots, facts: dict[str, Any], limit: int | None = None,
           source: str = "auto") -> dict[str, Any]:
    """Aggregate the table (at most `limit` entries, scaled to the count) into facts['flows']."""
    # Imported here: audit --no-sample and the counter polls never need the parsers.
    from ct_tune import ctsource
    from ct_tune.flows import FlowStats

    stats = FlowStats(timeouts_of(facts))
    start = time.monotonic()
    with ctsource.table_blocks(roots, source) as (source, blocks):
        stats.feed_blocks(blocks, limit=limit)
    elapsed = time.monotonic() - start
    count = facts["sysctl"].get("net.netfilter.nf_conntrack_count", {}).get("value")
    summary = stats.summary(total=count if limit is not None else None)
    return {"source": source, "limit": limit, "seconds": round(elapsed, 3), **summary}


def fill_missing_stat(roots: Roots, facts: dict[str, Any]) -> None:
    """Counters from ctnetlink (conntrack -S) when /proc/net/stat/nf_conntrack is absent."""
    if facts.get("stat") is not None or not roots.live or not facts["conntrack"]["loaded"]:
        return  # the usual case: no PATH search, no shutil
    import shutil

    exe = shutil.which("conntrack")
    if exe:
        from ct_tune import ctsource

        facts["stat"] = ctsource.conntrack_stats(exe)


RATE_COUNTERS = ("drop", "early_drop", "insert_failed", "chaintoolong", "clash_resolve",
                 "invalid")


#: polls kept in window["series"]: a longer window keeps the highest count of each stretch
SERIES_POINTS = 2000


def thin(series: list[list[float]], most: int = SERIES_POINTS) -> list[list[float]]:
    """At most `most` [seconds, count] points: each stretch of consecutive polls is kept as
    its highest one, so a peak survives into the chart (pure)."""
    if len(series) <= most:
        return series
    step = -(-len(series) // most)
    return [max(series[i:i + step], key=lambda p: p[1]) for i in range(0, len(series), step)]


def window_summary(counts: list[int], first: dict[str, int] | None,
                   last: dict[str, int] | None, seconds: float,
                   times: list[float] | None = None) -> dict[str, Any]:
    """Peak/mean/growth of the count and per-second counter rates over a window (pure);
    with `times` (seconds from the start, one per count), the polls themselves as series."""
    rates = {}
    if first is not None and last is not None and seconds > 0:
        rates = {f"{k}_per_s": round((last.get(k, 0) - first.get(k, 0)) / seconds, 3)
                 for k in RATE_COUNTERS if k in last}
    return {
        "seconds": round(seconds, 3),
        "polls": len(counts),
        "peak": max(counts) if counts else None,
        "mean": round(sum(counts) / len(counts), 1) if counts else None,
        "growth": (counts[-1] - counts[0]) if counts else None,
        "rates": rates,
        **({"series": thin([[round(t, 1), c] for t, c in zip(times, counts, strict=True)])}
           if times is not None else {}),
    }


def poll(roots: Roots, duration: float, interval: float, progress: Any = None,
         namespaces: dict[str, Any] | None = None) -> dict[str, Any]:
    """Poll nf_conntrack_count and the stat counters for `duration` seconds; with the
    other namespaces' scan taken before (facts['namespaces']), their drop rates too."""
    from ct_tune import parsers, safeio

    count_path = roots.proc("sys/net/netfilter/nf_conntrack_count")
    stat_path = roots.proc("net/stat/nf_conntrack")

    def read() -> tuple[int | None, dict[str, int] | None]:
        # Gone or unparsable mid-window: that poll has no value.  A FIFO or device in
        # their place, or an unbounded file, is bad input (safeio's InputError).
        text = safeio.read_text(count_path, safeio.VALUE, missing_ok=True, denied_ok=True)
        try:
            count = parsers.parse_int(text) if text is not None else None
        except ValueError:
            count = None
        text = safeio.read_text(stat_path, safeio.PROC_TABLE, missing_ok=True, denied_ok=True)
        try:
            counters = parsers.parse_conntrack_stat(text)["counters"] if text else None
        except ValueError:
            counters = None
        return count, counters

    start = time.monotonic()
    count, first = read()
    counts = [count] if count is not None else []
    times = [0.0] if count is not None else []
    last = first
    while (elapsed := time.monotonic() - start) < duration:
        time.sleep(min(interval, max(0.0, duration - elapsed)))
        count, last = read()
        if count is not None:
            counts.append(count)
            times.append(time.monotonic() - start)
        if progress:
            progress(time.monotonic() - start, duration, count)
    window = window_summary(counts, first, last, time.monotonic() - start, times)
    if namespaces:
        from ct_tune import nsload, nsview

        window["namespaces"] = nsload.rates(namespaces, nsview.scan(roots.procfs),
                                            time.monotonic() - start)
    return window
