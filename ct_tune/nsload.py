"""The other network namespaces' tables against the global max (pure): which one is the
fullest, and whether it drops packets now.  Their counters come from ct_tune.nsview.

The kernel checks nf_conntrack_max against each namespace's own count
(nf_conntrack_core.c __nf_conntrack_alloc), so the host's max must fit the busiest
namespace, not the host's own table or the sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COUNTERS = ("drop", "early_drop", "insert_failed")


def rates(first: Mapping[str, Any] | None, last: Mapping[str, Any] | None,
          seconds: float) -> dict[str, Any] | None:
    """Per-namespace rates over a window from two scans: namespaces in both (the same
    process, or counters that did not go back), the larger of their two counts, and
    counter increases per second; dropping first, then fullest."""
    if not first or not last or seconds <= 0:
        return None
    before = {n["netns"]: n for n in first["list"]}
    out = []
    for n in last["list"]:
        b = before.get(n["netns"])
        if b is None or any(n[k] < b[k] for k in COUNTERS):
            continue
        out.append({"netns": n["netns"], "pid": n["pid"], "names": n["names"],
                    "peak": max(n["entries"], b["entries"]),
                    **{f"{k}_per_s": round((n[k] - b[k]) / seconds, 3) for k in COUNTERS}})
    out.sort(key=lambda n: (-n["drop_per_s"], -n["peak"], n["netns"]))
    return {"seconds": round(seconds, 3), "list": out}


def busiest(namespaces: Mapping[str, Any] | None, window: Mapping[str, Any] | None,
            max_entries: int | None) -> dict[str, Any] | None:
    """The namespace that needs the largest max: dropping now first, then the fullest.
    None when no other namespace was read."""
    if not namespaces or not namespaces.get("list"):
        return None
    polled = {}
    if window and window.get("namespaces"):
        polled = {n["netns"]: n for n in window["namespaces"]["list"]}
    rows = []
    for n in namespaces["list"]:
        r = polled.get(n["netns"], {})
        entries = max(n["entries"], r.get("peak", 0))
        rows.append({
            "netns": n["netns"], "pid": n["pid"], "names": list(n["names"]),
            "label": (n["names"][0] if n["names"] else f"pid {n['pid']}"),
            "entries": entries, "drop": n["drop"], "early_drop": n["early_drop"],
            "drop_per_s": r.get("drop_per_s"), "early_drop_per_s": r.get("early_drop_per_s"),
            "use": round(entries / max_entries, 4) if max_entries else None,
            "source": n["source"],
        })
    dropping = [x for x in rows if (x["drop_per_s"] or 0) > 0 or (x["early_drop_per_s"] or 0) > 0]
    worst = max(rows, key=lambda x: ((x["drop_per_s"] or 0) + (x["early_drop_per_s"] or 0) > 0,
                                     x["entries"], x["drop"]))
    return {**worst, "dropping": len(dropping), "read": namespaces.get("seen", len(rows)),
            "truncated": bool(namespaces.get("truncated"))}
