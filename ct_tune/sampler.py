"""Sampling the live table: one pass over the dump into bounded aggregates.

Kept apart from facts.py because it is the expensive, optional part of
collecting (``--no-sample`` skips it) and the only part that may run an
external command (conntrack -L / -S when procfs lacks the files).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
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


class OpenTable:
    """The table dump opened ahead of time: the reader process (dd) starts at once, so the
    kernel prints the first part of the table into the pipe while the facts are gathered
    (about a tenth of a second of start-up that would otherwise come before it).  sample()
    reads it; close() is idempotent and harmless when it was never read."""

    def __init__(self, roots: Roots, source: str = "auto") -> None:
        from ct_tune import ctsource

        self._stack = contextlib.ExitStack()
        self.source, self.blocks = self._stack.enter_context(
            ctsource.table_blocks(roots, source))

    def close(self) -> None:
        self._stack.close()


def sample(roots: Roots, facts: dict[str, Any], limit: int | None = None,
           source: str = "auto", opened: OpenTable | None = None) -> dict[str, Any]:
    """Aggregate the table (at most `limit` entries, scaled to the count) into facts['flows'].
    `opened`: the table already opened with OpenTable (it is read and closed here)."""
    # Imported here: audit --no-sample and the counter polls never need the parsers.
    from ct_tune.flows import FlowStats, sample_every

    count = facts["sysctl"].get("net.netfilter.nf_conntrack_count", {}).get("value")
    if not isinstance(count, int):
        count = None
    expected = min((n for n in (count, limit) if n is not None), default=None)
    stats = FlowStats(timeouts_of(facts), sample_every(expected))
    start = time.monotonic()
    table = opened if opened is not None else OpenTable(roots, source)
    try:
        stats.feed_blocks(table.blocks, limit=limit)
    finally:
        table.close()
    elapsed = time.monotonic() - start
    summary = stats.summary(total=count if limit is not None else None)
    return {"source": table.source, "limit": limit, "seconds": round(elapsed, 3), **summary}


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


#: nf_conntrack_count is an atomic int: a polled value beyond 32 bits is no reading at all
COUNT_LIMIT = 2**32 - 1
#: a count above this many times nf_conntrack_max is corrupt.  Lowering max leaves the
#: entries above it until they expire (__nf_conntrack_alloc() only refuses new ones), so a
#: count over max is real; only one far over it is not.  Max 0 means no limit.
ABSURD_FACTOR = 16
#: distinct problems kept in window["discarded"]["problems"]
MAX_PROBLEMS = 10


def count_problem(count: int, max_entries: int | None) -> str | None:
    """Why a polled nf_conntrack_count cannot be the table's (None: it can), so one corrupt
    reading never becomes the window's peak."""
    if count < 0:
        return f"negative count {count}"
    if count > COUNT_LIMIT:
        return f"count {count} is beyond 2^32 - 1"
    if max_entries and max_entries > 0 and count > ABSURD_FACTOR * max_entries:
        return (f"count {count} is more than {ABSURD_FACTOR}x nf_conntrack_max "
                f"({max_entries})")
    return None


def went_back(before: Mapping[str, int], now: Mapping[str, int]) -> list[str]:
    """The rate counters lower now than at the reading kept before: reset (the namespace
    was created again, a CPU's 32-bit counter wrapped) or corrupt, so no rate can span
    the two readings."""
    return [k for k in RATE_COUNTERS if k in before and k in now and now[k] < before[k]]


def window_summary(counts: list[int], first: dict[str, int] | None,
                   last: dict[str, int] | None, seconds: float,
                   times: list[float] | None = None,
                   discarded: Mapping[str, Any] | None = None,
                   counter_seconds: float | None = None) -> dict[str, Any]:
    """Peak/mean/growth of the count and per-second counter rates over a window (pure);
    with `times` (seconds from the start, one per count), the polls themselves as series.
    `discarded`: the readings polling threw away (count, counters, problems);
    `counter_seconds`: the time between the `first` and `last` counters (else `seconds`).
    """
    span = seconds if counter_seconds is None else counter_seconds
    rates = {}
    if first is not None and last is not None and span > 0:
        rates = {f"{k}_per_s": round(max(0, last.get(k, 0) - first.get(k, 0)) / span, 3)
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
        "discarded": {"count": int((discarded or {}).get("count", 0)),
                      "counters": int((discarded or {}).get("counters", 0)),
                      "problems": list((discarded or {}).get("problems", []))[:MAX_PROBLEMS]},
    }


def poll(roots: Roots, duration: float, interval: float, progress: Any = None,
         namespaces: dict[str, Any] | None = None) -> dict[str, Any]:
    """Poll nf_conntrack_count and the stat counters for `duration` seconds; with the
    other namespaces' scan taken before (facts['namespaces']), their drop rates too.

    A reading that cannot be the table's has no value and is counted in the window's
    "discarded": a count that does not parse, is negative or absurd (count_problem), and
    counters that do not parse or went back since the last reading kept (went_back).
    Rates span the first and last counters kept, so a reset never reads as negative."""
    from ct_tune import parsers, safeio

    count_path = roots.proc("sys/net/netfilter/nf_conntrack_count")
    max_path = roots.proc("sys/net/netfilter/nf_conntrack_max")
    stat_path = roots.proc("net/stat/nf_conntrack")
    discarded: dict[str, Any] = {"count": 0, "counters": 0, "problems": []}

    def drop(kind: str, path: Any, problem: str) -> None:
        discarded[kind] += 1
        line = f"{path}: {problem}"
        if line not in discarded["problems"] and len(discarded["problems"]) < MAX_PROBLEMS:
            discarded["problems"].append(line)

    def number(path: Any) -> int | None:
        # Gone mid-window: that poll has no value.  A FIFO or device in its place, or an
        # unbounded file, is bad input (safeio's InputError).
        text = safeio.read_text(path, safeio.VALUE, missing_ok=True, denied_ok=True)
        if text is None:
            return None
        try:
            return parsers.parse_int(text)
        except ValueError as e:
            if path == count_path:
                drop("count", path, str(e))
            return None

    def read_count() -> int | None:
        count = number(count_path)
        if count is None:
            return None
        most = number(max_path)  # read each time: apply may raise it within the window
        problem = count_problem(count, most)
        if problem:
            drop("count", count_path, problem)
            return None
        return count

    def read_counters(kept: dict[str, int] | None) -> dict[str, int] | None:
        text = safeio.read_text(stat_path, safeio.PROC_TABLE, missing_ok=True, denied_ok=True)
        if not text:
            return None
        try:
            counters = parsers.parse_conntrack_stat(text)["counters"]
        except ValueError as e:
            drop("counters", stat_path, str(e))
            return None
        back = went_back(kept, counters) if kept is not None else []
        if back:
            drop("counters", stat_path,
                 f"{', '.join(back)} went back ({kept[back[0]]} -> {counters[back[0]]}): "
                 "reset or corrupt")
            return None
        return counters

    start = time.monotonic()
    counts: list[int] = []
    times: list[float] = []
    first = last = None
    first_t = last_t = 0.0
    started = False
    while True:
        now = time.monotonic() - start
        count = read_count()
        counters = read_counters(last)
        if count is not None:
            counts.append(count)
            times.append(now)
        if counters is not None:
            if first is None:
                first, first_t = counters, now
            last, last_t = counters, now
        if started and progress:  # each poll after the first
            progress(time.monotonic() - start, duration, count)
        started = True
        elapsed = time.monotonic() - start
        if elapsed >= duration:
            break
        time.sleep(min(interval, max(0.0, duration - elapsed)))
    window = window_summary(counts, first, last, time.monotonic() - start, times, discarded,
                            counter_seconds=last_t - first_t)
    if namespaces:
        from ct_tune import nsload, nsview

        window["namespaces"] = nsload.rates(namespaces, nsview.scan(roots.procfs),
                                            time.monotonic() - start)
    return window
