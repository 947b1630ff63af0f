"""Synthetic conntrack tables in the real /proc/net/nf_conntrack format.

For what a real kernel cannot be made to hold in a test (150,000 TIME_WAIT
entries, connections idle for two days), rule cases describe flow classes and
this module writes the lines; they then go through the real parser and the
real aggregates (flows.FlowStats), exactly as a sampled table would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ct_tune import facts
from ct_tune.flows import FlowStats, class_of, sample_every
from ct_tune.sampler import timeouts_of


def _addr(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def lines(spec: Mapping[str, Any], timeouts: Mapping[str, int], start: int = 0) -> Iterator[str]:
    """`count` lines of one class, idle times spread evenly over the whole seconds of
    spec['idle'] = [lo, hi], both ends included."""
    l4, _, kind = spec["class"].partition("/")
    count, dport = spec["count"], spec.get("dport", 80)
    lo, hi = spec.get("idle", [0, 0])
    state = kind if l4 == "tcp" else None
    flags = {"unreplied": 1, "stream": 2}.get(kind, 0) if l4 == "udp" else 0
    timeout = timeouts[class_of(l4, state, flags)[1]]
    proto = {"tcp": 6, "udp": 17}[l4]
    for n in range(count):
        idle = min(hi, lo + (hi - lo + 1) * n // count)
        ttl = max(0, timeout - idle)
        src, dst, sport = _addr(start + n), "192.0.2.1", 1024 + (start + n) % 60000
        head = f"ipv4     2 {l4:<8} {proto} {ttl} " + (f"{state} " if state else "")
        orig = f"src={src} dst={dst} sport={sport} dport={dport} "
        reply = f"src={dst} dst={src} sport={dport} dport={sport} "
        if flags & 1:
            yield f"{head}{orig}[UNREPLIED] {reply}mark=0 zone=0 use=2"
        else:
            yield f"{head}{orig}{reply}[ASSURED] mark=0 zone=0 use=2"


def write_dump(roots: facts.Roots, specs: list[Mapping[str, Any]]) -> None:
    """A captured tree's net/nf_conntrack holding the given classes, with the TTLs its own
    timeouts give (the tree sampled as a live table would be)."""
    timeouts = timeouts_of(facts.collect(roots))
    out, start = [], 0
    for spec in specs:
        out += lines(spec, timeouts, start)
        start += spec["count"]
    (roots.procfs / "net/nf_conntrack").write_text("\n".join(out) + "\n")


def summary(specs: list[Mapping[str, Any]], facts: dict[str, Any]) -> dict[str, Any]:
    """facts['flows'] for a table holding the given classes (timeouts from the facts)."""
    timeouts = timeouts_of(facts)
    # parsed as the live sampler parses a table of this size: every k-th line past 65,536
    stats = FlowStats(timeouts, sample_every(sum(spec["count"] for spec in specs)))
    start = 0
    for spec in specs:
        stats.feed(lines(spec, timeouts, start))
        start += spec["count"]
    return {"source": "synthetic", "limit": None, "seconds": 0.0, **stats.summary()}
