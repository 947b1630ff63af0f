"""Bounded-memory aggregates of a conntrack table sample.

A busy NAT gateway holds a million entries; keeping them would cost hundreds
of MiB in Python.  Every aggregate here has a fixed upper size whatever the
table: counters per protocol/state/flag/zone, a 65536-slot destination-port
array, a capped (lossy-counting) table of destination addresses, and per flow
class histograms of remaining TTL and idle time with at most IDLE_BINS bins.

Idle time is the class timeout minus the seconds left: an entry's TTL is
reset to the class timeout on every packet, so this is the time since its
last packet (capped at the timeout).
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from ct_tune.flowparse import scan_line

IDLE_BINS = 1024
PORTS_PER_BIN = 64
TOP_ADDRS_CAP = 4096
TOP_K = 10

_TCP_STATE_KEY = {"SYN_SENT2": "syn_sent"}


def class_of(l4: str, state: str | None, flags: int) -> tuple[str, str]:
    """(class name, the timeout sysctl that holds entries of that class)."""
    if l4 == "tcp" and state:
        return f"tcp/{state}", "nf_conntrack_tcp_timeout_" + _TCP_STATE_KEY.get(
            state, state.lower())
    if l4 == "udp":
        if flags & 2:
            return "udp/stream", "nf_conntrack_udp_timeout_stream"
        return ("udp/unreplied" if flags & 1 else "udp/replied"), "nf_conntrack_udp_timeout"
    if l4 in ("icmp", "icmpv6"):
        return l4, f"nf_conntrack_{l4}_timeout"
    if l4 == "gre":
        return ("gre/stream", "nf_conntrack_gre_timeout_stream") if flags & 2 else (
            "gre", "nf_conntrack_gre_timeout")
    if l4 == "sctp" and state:
        return f"sctp/{state}", "nf_conntrack_sctp_timeout_" + state.lower()
    return l4, "nf_conntrack_generic_timeout"


class _Class:
    """Histograms for one flow class (e.g. tcp/ESTABLISHED)."""

    __slots__ = ("count", "idle", "port_bins", "timeout", "width")

    def __init__(self, timeout: int) -> None:
        self.timeout = max(1, timeout)
        self.width = max(1, math.ceil(self.timeout / IDLE_BINS))
        self.count = 0
        self.idle = array("L", bytes(array("L").itemsize * (IDLE_BINS + 1)))
        # Ports per idle-time octave: bin k holds idle in [2**(k-1), 2**k) s (k=0: idle 0),
        # so "which ports idle longer than T?" is answered to within a factor of two
        # for any T from seconds to days.
        self.port_bins: list[Counter[str]] = [
            Counter() for _ in range(self.timeout.bit_length() + 1)]

    def add(self, ttl: int, dport: str | None) -> None:
        idle = self.timeout - ttl
        if idle < 0:
            idle = 0
        elif idle > self.timeout:
            idle = self.timeout
        self.count += 1
        self.idle[idle // self.width] += 1
        if dport is not None:
            c = self.port_bins[idle.bit_length()]
            c[dport] += 1
            if len(c) > PORTS_PER_BIN * 2:
                _prune(c, PORTS_PER_BIN)


def _prune(counter: Counter, keep: int) -> None:
    """Lossy counting: keep the `keep` largest, dropping the tail (bounded memory)."""
    top = heapq.nlargest(keep, counter.items(), key=lambda kv: kv[1])
    counter.clear()
    counter.update(dict(top))


class FlowStats:
    """Aggregates fed line by line from a table dump."""

    def __init__(self, timeouts: Mapping[str, int]) -> None:
        self.timeouts = dict(timeouts)
        self.entries = 0
        self.malformed = 0
        self.malformed_examples: list[str] = []
        self.by_l3: Counter[str] = Counter()
        self.by_l4: Counter[str] = Counter()
        self.by_flag: Counter[str] = Counter()
        self.by_zone: Counter[int] = Counter()
        self.ports = array("L", bytes(array("L").itemsize * 65536))
        self.addrs: Counter[str] = Counter()
        self.addrs_pruned = False
        self.classes: dict[str, _Class] = {}
        self._class_key: dict[tuple[str, str | None, int], str] = {}
        self.class_timeout_key: dict[str, str] = {}

    def _class(self, l4: str, state: str | None, flags: int) -> _Class:
        key = (l4, state, flags & 3)
        name = self._class_key.get(key)
        if name is None:
            name, tkey = class_of(l4, state, flags)
            self._class_key[key] = name
            if name not in self.classes:
                timeout = self.timeouts.get(tkey) or self.timeouts.get(
                    "nf_conntrack_generic_timeout", 600)
                self.classes[name] = _Class(int(timeout))
                self.class_timeout_key[name] = tkey
        return self.classes[name]

    def feed(self, lines: Iterable[str], limit: int | None = None) -> None:
        """Aggregate lines (stopping after `limit` entries); malformed lines are counted."""
        by_l3, by_l4, by_zone, addrs, ports = (self.by_l3, self.by_l4, self.by_zone,
                                               self.addrs, self.ports)
        flag_counts = [0] * 16
        n = self.entries
        for line in lines:
            if limit is not None and n >= limit:
                break
            try:
                l3, l4, state, ttl, dst, dport, flags, zone = scan_line(line)
                if dport is not None:
                    ports[int(dport)] += 1
            except (ValueError, IndexError, OverflowError):
                if line.strip():
                    self.malformed += 1
                    if len(self.malformed_examples) < 3:
                        self.malformed_examples.append(line.strip()[:200])
                continue
            n += 1
            by_l3[l3] += 1
            by_l4[l4] += 1
            flag_counts[flags] += 1
            if zone:
                by_zone[zone] += 1
            addrs[dst] += 1
            if len(addrs) > TOP_ADDRS_CAP * 2:
                _prune(addrs, TOP_ADDRS_CAP)
                self.addrs_pruned = True
            self._class(l4, state, flags).add(ttl, dport)
        self.entries = n
        for bits, c in enumerate(flag_counts):
            for i, name in enumerate(("UNREPLIED", "ASSURED", "OFFLOAD", "HW_OFFLOAD")):
                if bits & (1 << i):
                    self.by_flag[name] += c

    def top_ports(self, k: int = TOP_K) -> list[tuple[int, int]]:
        return [(p, c) for p, c in heapq.nlargest(k, enumerate(self.ports), key=lambda x: x[1])
                if c]

    def summary(self, total: int | None = None) -> dict[str, Any]:
        """JSON-able aggregates, scaled to `total` entries when this was a partial sample."""
        n = self.entries
        scale = (total / n) if total and n and total > n else 1.0
        sampled = scale > 1.0

        def est(c: int) -> int:
            return round(c * scale)

        def margin(c: int) -> int:
            # 95 % margin of a proportion from a simple random sample, finite population.
            if not sampled or not n:
                return 0
            p = c / n
            fpc = math.sqrt((total - n) / max(1, total - 1))
            return math.ceil(1.96 * math.sqrt(p * (1 - p) / n) * fpc * total)

        classes = {}
        for name, cls in sorted(self.classes.items(), key=lambda kv: -kv[1].count):
            classes[name] = {
                "entries": est(cls.count),
                "margin": margin(cls.count),
                "timeout_key": "net.netfilter." + self.class_timeout_key[name],
                "timeout": cls.timeout,
                "idle_bin_seconds": cls.width,
                "idle_histogram": _sparse(cls.idle, scale),
                "idle_ports": [{str(p): est(c) for p, c in b.most_common(PORTS_PER_BIN)}
                               for b in cls.port_bins],
            }
        return {
            "entries_read": n,
            "entries_estimated": est(n),
            "sampled": sampled,
            "scale": round(scale, 6),
            "malformed": self.malformed,
            "malformed_examples": self.malformed_examples,
            "by_l3": {k: est(v) for k, v in self.by_l3.most_common()},
            "by_l4": {k: est(v) for k, v in self.by_l4.most_common()},
            "by_flag": {k: est(v) for k, v in self.by_flag.most_common()},
            "by_zone": {str(k): est(v) for k, v in self.by_zone.most_common()},
            "top_dports": [[p, est(c)] for p, c in self.top_ports()],
            "top_dsts": [[a, est(c)] for a, c in self.addrs.most_common(TOP_K)],
            "top_dsts_approximate": self.addrs_pruned,
            "classes": classes,
        }


def _sparse(hist: array, scale: float) -> dict[str, int]:
    return {str(i): round(c * scale) for i, c in enumerate(hist) if c}
