"""Bounded-memory aggregates of a conntrack table sample.

A busy NAT gateway holds a million entries; keeping them would cost hundreds
of MiB in Python.  Every aggregate here has a fixed upper size whatever the
table: counters per protocol/state/flag/zone, a 65536-slot destination-port
array, a capped (lossy-counting) table of destination addresses, and per flow
class histograms of remaining TTL and idle time with at most IDLE_BINS bins.

Idle time is the class timeout minus the seconds left: an entry's TTL is
reset to the class timeout on every packet, so this is the time since its
last packet (capped at the timeout).

A table of more than SAMPLE_ROWS lines is read whole but parsed from every k-th
line only (sample_every): its size is exact, every other count an estimate with
its margin.

Two ways in, one result: :meth:`FlowStats.feed` takes lines one at a time, and
:meth:`FlowStats.feed_blocks` takes blocks of lines, counting each block's
lines per distinct (protocol, state, TTL, flags) key and its addresses and
ports with C-level Counter updates.  The capped tables are lossy, so their
contents depend on the order entries arrive in; feed_blocks keeps that order
and prunes at exactly the entries where feed would, so both give the same
summary for the same text (a property test checks it).
"""

from __future__ import annotations

import gc
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import compress, repeat
from operator import floordiv, itemgetter, sub
from typing import Any

from ct_tune.flowparse import (
    FLAG_BITS,
    FLAGS,
    MAX_LINE,
    OFFLOADED,
    Columns,
    NotAnEntry,
    block_lines,
    scan_block,
    scan_line,
)
from ct_tune.formulas import margin95

IDLE_BINS = 1024
PORTS_PER_BIN = 64
#: A port table of an idle bin is pruned back to its PORTS_PER_BIN largest when it grows
#: past PORT_BIN_SLACK times that: each prune sorts the table, and with all-distinct ports
#: (a scan, ephemeral ports) a slack of 2 sorted once every 64 entries.
PORT_BIN_SLACK = 8
TOP_ADDRS_CAP = 4096
TOP_K = 10
#: Distinct protocol names, flow classes and zones kept apart.  The kernel prints about
#: ten protocols and fifty classes (protocol x state x flag) and a host uses a few zones;
#: a dump with more is corrupt or hostile, and without a bound each new name would cost a
#: histogram (a 50,000-line dump of made-up protocols took 530 MiB).  Names past the
#: bound are counted together under OTHER.
MAX_L4 = 32
MAX_CLASSES = 64
MAX_ZONES = 1024
OTHER = "other"

#: A table of up to this many lines is parsed whole; a larger one has every k-th line
#: parsed, k chosen to parse about this many.
SAMPLE_ROWS = 1 << 16


def sample_every(entries: int | None) -> int:
    """k for a table of about `entries` entries: 1 (every line) up to SAMPLE_ROWS.

    Why: the kernel takes about 2.5 us to print an entry and Python about as long to
    parse it, so parsing every line of a big table doubles the cost of a sample.  What
    the aggregates answer (which classes, timeouts and ports hold the table, how much a
    change frees) is a share, and 65,536 evenly spread entries estimate a share to within
    half a percent of the table; the margins say how much.  Every line is still read, so
    the table's size is known exactly and the sample is spread over all of it, never the
    first part only.  The table's order is its hash order, which has nothing to do with
    the classes, so every k-th line is as good as a random sample.
    """
    return max(1, -(-(entries or 0) // SAMPLE_ROWS))


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
    if l4 in ("sctp", "dccp") and state:
        return f"{l4}/{state}", f"nf_conntrack_{l4}_timeout_" + state.lower()
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
            if len(c) > PORTS_PER_BIN * PORT_BIN_SLACK:
                _prune(c, PORTS_PER_BIN)

    def add_rows(self, ttls: Sequence[str], dports: Sequence[str]) -> None:
        """add() for each row in order, TTLs as decimal text and "" for no port: the
        arithmetic once per distinct TTL, the counting in C."""
        counts = Counter(ttls)
        texts = list(counts)
        idle = list(map(sub, repeat(self.timeout), map(int, texts)))
        if min(idle) < 0:  # a TTL above the timeout: the timeout was lowered since
            idle = [max(i, 0) for i in idle]
        hist = self.idle
        for b, c in zip(map(floordiv, idle, repeat(self.width)), counts.values(), strict=True):
            hist[b] += c
        self.count += len(ttls)
        bins = [i.bit_length() for i in idle]  # the idle octave, as in add()
        if min(bins) == max(bins):
            run = dports if "" not in dports else tuple(filter(None, dports))
            _count_in_order(self.port_bins[bins[0]], run, PORTS_PER_BIN, PORT_BIN_SLACK)
            return
        runs: list[list[str]] = [[] for _ in self.port_bins]
        add = [r.append for r in runs]
        for b, dport in zip(map(dict(zip(texts, bins, strict=True)).__getitem__, ttls), dports,
                            strict=True):
            if dport:
                add[b](dport)
        for counter, run in zip(self.port_bins, runs, strict=True):
            if run:
                _count_in_order(counter, run, PORTS_PER_BIN, PORT_BIN_SLACK)


def _prune(counter: Counter, keep: int) -> None:
    """Lossy counting: keep the `keep` largest, dropping the tail (bounded memory).

    A stable sort, so equal counts keep their order: what heapq.nlargest gives
    (documented as sorted(..., reverse=True)[:keep]), at a fraction of the cost
    for the ~2*keep items pruned here thousands of times per sample.
    """
    top = sorted(counter.items(), key=itemgetter(1), reverse=True)[:keep]
    counter.clear()
    dict.update(counter, top)


def _count_in_order(counter: Counter, items: Sequence[str], keep: int, slack: int = 2) -> bool:
    """``counter[x] += 1`` for each item in order, pruning to `keep` each time it grows past
    slack * keep entries, as feed does entry by entry; True if it pruned.

    Runs of items go through Counter.update in C: a run of k items adds at most k
    keys, so a run that fits below the threshold cannot hold a prune, and only
    an item arriving at the threshold is taken alone.
    """
    limit = slack * keep
    pruned = False
    i, n = 0, len(items)
    while i < n:
        room = limit - len(counter)
        if room > 0:
            counter.update(items[i:i + room])
            i += room
        else:
            counter[items[i]] += 1
            i += 1
            if len(counter) > limit:
                _prune(counter, keep)
                pruned = True
    return pruned


class FlowStats:
    """Aggregates fed line by line from a table dump."""

    def __init__(self, timeouts: Mapping[str, int], every: int = 1) -> None:
        self.timeouts = dict(timeouts)
        #: lines 0, k, 2k, ... of the dump are parsed (k = every, sample_every)
        self.every = max(1, every)
        #: lines of the dump read, parsed or not, and of those the lines parsed
        self.lines = 0
        self.parsed = 0
        #: entries among the lines parsed
        self.entries = 0
        self.offloaded = 0
        self.malformed = 0
        self.malformed_examples: list[str] = []
        #: kind of unreadable line -> [count, first example]
        self.malformed_kinds: dict[str, list[Any]] = {}
        self.summary_lines = 0
        self.by_l3: Counter[str] = Counter()
        self.by_l4: Counter[str] = Counter()
        self.by_flag: Counter[str] = Counter()
        self.by_zone: Counter[int | str] = Counter()
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
            if name not in self.classes and len(self.classes) >= MAX_CLASSES:
                name, tkey = OTHER, "nf_conntrack_generic_timeout"
            if len(self._class_key) < 4 * MAX_CLASSES:  # a cache, bounded like the rest
                self._class_key[key] = name
            if name not in self.classes:
                timeout = self.timeouts.get(tkey) or self.timeouts.get(
                    "nf_conntrack_generic_timeout", 600)
                self.classes[name] = _Class(int(timeout))
                self.class_timeout_key[name] = tkey
        return self.classes[name]

    def _l4(self, l4: str) -> str:
        """The by_l4 key of a protocol name: itself, or OTHER past MAX_L4 names."""
        return l4 if l4 in self.by_l4 or len(self.by_l4) < MAX_L4 else OTHER

    def _zone(self, zone: int) -> int | str:
        """The by_zone key of a zone: itself, or OTHER past MAX_ZONES zones."""
        return zone if zone in self.by_zone or len(self.by_zone) < MAX_ZONES else OTHER

    def feed(self, lines: Iterable[str], limit: int | None = None) -> None:
        """Aggregate lines (stopping after `limit` lines); malformed lines are counted."""
        flag_counts = [0] * 16
        self._feed_lines(self._pick_lines(lines, limit), flag_counts)
        self._add_flag_counts(flag_counts)

    def _pick_lines(self, lines: Iterable[str], limit: int | None) -> Iterator[str]:
        """Lines 0, k, 2k, ... of the dump (k = every), counting every line read."""
        every = self.every
        for line in lines:
            if limit is not None and self.lines >= limit:
                return
            i = self.lines
            self.lines = i + 1
            if i % every == 0:
                self.parsed += 1
                yield line

    def feed_blocks(self, blocks: Iterable[str], limit: int | None = None) -> None:
        """Aggregate blocks of whole lines (the last may lack its newline) exactly as feed
        would aggregate their lines, at a fraction of the cost per line.

        A block scan_block cannot vouch for (a malformed line, an odd one) goes
        through feed's line-by-line path, so malformed lines are still counted
        and quoted in order.
        """
        flag_counts = [0] * 16
        # Each block makes thousands of short-lived tuples and no reference cycles: the
        # cyclic collector would only walk them (about a tenth of the time), so it waits.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for block in blocks:
                if limit is not None and self.lines >= limit:
                    break
                block = self._pick_block(block, limit)
                if not block:
                    continue
                cols = scan_block(block)
                if cols is None or not self._add_columns(cols, flag_counts):
                    self._feed_lines(block_lines(block), flag_counts)
        finally:
            if collecting:
                gc.enable()
        self._add_flag_counts(flag_counts)

    def _pick_block(self, block: str, limit: int | None) -> str:
        """The lines of `block` that _pick_lines would give (as one block of text),
        counting every line read: the block itself when every line is taken."""
        start, every = self.lines, self.every
        partial = not block.endswith("\n")  # the dump's last line, cut short
        if every == 1 and limit is None:
            total = block.count("\n") + partial
            self.lines += total
            self.parsed += total
            return block
        lines = block.split("\n")
        if not partial:
            lines.pop()
        total = len(lines)
        take = total if limit is None else min(total, limit - start)
        self.lines = start + take
        first = -start % every
        picked = lines[first:take:every]
        self.parsed += len(picked)
        if not picked:
            return ""
        text = "\n".join(picked)
        if partial and first + (len(picked) - 1) * every == total - 1:
            return text  # ends with that last line, as it came
        return text + "\n"

    def _feed_lines(self, lines: Iterable[str], flag_counts: list[int]) -> None:
        by_l3, by_l4, by_zone, addrs, ports = (self.by_l3, self.by_l4, self.by_zone,
                                               self.addrs, self.ports)
        n = self.entries
        for line in lines:
            try:
                l3, l4, state, ttl, dst, dport, flags, zone = scan_line(line)
                if dport is not None and int(dport) > 65535:
                    raise IndexError("port above 65535")
            except NotAnEntry:
                self.summary_lines += 1
                continue
            except (ValueError, IndexError, OverflowError) as e:
                if line.strip():
                    self._count_malformed(line, e)
                continue
            n += 1
            by_l3[l3] += 1
            by_l4[self._l4(l4)] += 1
            flag_counts[flags] += 1
            if zone:
                by_zone[self._zone(zone)] += 1
            if dport is not None:
                ports[int(dport)] += 1
            addrs[dst] += 1
            if len(addrs) > TOP_ADDRS_CAP * 2:
                _prune(addrs, TOP_ADDRS_CAP)
                self.addrs_pruned = True
            if flags & OFFLOADED or ttl is None:
                self.offloaded += 1  # refreshed by the offload: its TTL is no idle time
            else:
                self._class(l4, state, flags).add(ttl, dport)
        self.entries = n

    def _count_malformed(self, line: str, error: Exception) -> None:
        self.malformed += 1
        text = line.strip()[:200]
        if len(self.malformed_examples) < 3:
            self.malformed_examples.append(text)
        kind = malformed_kind(error)
        seen = self.malformed_kinds.get(kind)
        if seen is None:
            self.malformed_kinds[kind] = [1, text]
        else:
            seen[0] += 1

    def _add_columns(self, cols: Columns, flag_counts: list[int]) -> bool:
        """Aggregate a scanned block; False, having changed nothing, when a line has a
        port feed would reject (it counts that line as malformed)."""
        port_col = cols.dport
        # Only a port of five digits or more can be above 65535: those compared as text
        # (equal lengths compare as numbers), no int() per row.  A longer one (or leading
        # zeros) goes line by line, where int() decides.
        long = list(compress(port_col, map((4).__lt__, map(len, port_col))))
        if long and (max(map(len, long)) > 5 or max(long) > "65535"):
            return False
        n = len(cols.l4)
        self.entries += n
        if cols.zone is not None:
            for zone_text, c in Counter(cols.zone).items():
                zone = int(zone_text)
                if zone:
                    self.by_zone[self._zone(zone)] += c
        key_cols = (cols.l3, cols.l4, cols.state, cols.flag1, cols.flag2)
        if all(c.count(c[0]) == n for c in key_cols):
            # one key for the whole block (the common case): no tuple per line to count
            head_counts: Mapping[tuple[str, ...], int] = {tuple(c[0] for c in key_cols): n}
            heads: Sequence[tuple[str, ...]] = ()
        else:
            heads = list(zip(*key_cols, strict=True))
            head_counts = Counter(heads)
        # Class keys in order of first appearance, so the Counters and the classes get
        # their keys in the order feed would insert them.
        by_l3, by_l4 = self.by_l3, self.by_l4
        classes: list[_Class] = []
        slot: dict[int, int] = {}                  # id of a class -> its index in classes
        index_of: dict[tuple[str, ...], int] = {}  # class key -> index in classes
        offloaded: list[tuple[str, ...]] = []
        for head, c in head_counts.items():
            l3, l4, state, flag1, flag2 = head
            flags = FLAG_BITS.get(flag1, 0) | FLAG_BITS.get(flag2, 0)
            by_l3[l3] += c
            by_l4[self._l4(l4)] += c
            flag_counts[flags] += c
            if flags & OFFLOADED:  # counted, kept out of the idle histograms
                self.offloaded += c
                offloaded.append(head)
                continue
            cls = self._class(l4, state or None, flags)
            i = index_of[head] = slot.setdefault(id(cls), len(classes))
            if i == len(classes):
                classes.append(cls)
        for head in offloaded:  # a slot past the classes': no histogram, no port bins
            index_of[head] = len(classes)
        ttls, dports = cols.ttl, port_col
        port_counts = Counter(dports)
        port_counts.pop("", None)
        ports = self.ports
        for port, c in zip(map(int, port_counts), port_counts.values(), strict=True):
            ports[port] += c
        if _count_in_order(self.addrs, cols.dst, TOP_ADDRS_CAP):
            self.addrs_pruned = True
        if not classes:  # all offloaded
            return True
        if len(classes) == 1 and not offloaded:
            classes[0].add_rows(ttls, dports)
            return True
        # each class's rows in order (offloaded ones in a list past the classes', dropped)
        ttl_runs: list[list[str]] = [[] for _ in range(len(classes) + 1)]
        port_runs: list[list[str]] = [[] for _ in range(len(classes) + 1)]
        add_ttl = [t.append for t in ttl_runs]
        add_port = [d.append for d in port_runs]
        for i, ttl, dport in zip(map(index_of.__getitem__, heads), ttls, dports, strict=True):
            add_ttl[i](ttl)
            add_port[i](dport)
        for cls, cls_ttls, cls_ports in zip(classes, ttl_runs, port_runs, strict=False):
            if cls_ttls:
                cls.add_rows(cls_ttls, cls_ports)
        return True

    def _add_flag_counts(self, flag_counts: list[int]) -> None:
        for bits, c in enumerate(flag_counts):
            for i, name in enumerate(FLAGS):
                if bits & (1 << i):
                    self.by_flag[name] += c

    def top_ports(self, k: int = TOP_K) -> list[tuple[int, int]]:
        """The k ports with the most entries (ties: the lower port first), none with 0.

        It runs after the kernel has printed the last entry, so every millisecond is one
        the user waits: the distinct counts are few (they sum to the lines parsed), and
        each is found among the 65,536 ports by array.index, in C, instead of a key call
        per port (about 5 ms for a table spread over every port, now under 1)."""
        ports = self.ports
        out: list[tuple[int, int]] = []
        for count in sorted(set(ports), reverse=True):
            if count == 0 or len(out) >= k:
                break
            start = 0
            while len(out) < k:
                try:
                    port = ports.index(count, start)
                except ValueError:
                    break
                out.append((port, count))
                start = port + 1
        return out

    def summary(self, total: int | None = None) -> dict[str, Any]:
        """JSON-able aggregates, scaled up when only part of the table was parsed: to
        `total` entries (the table's count) when the read stopped early (--sample-limit),
        else by the lines read per line parsed (every k-th line).  Every scaled count has
        its 95 % margin (margin95) beside it."""
        n = self.entries
        if total:
            scale = (total / n) if n and total > n else 1.0
        else:
            scale = (self.lines / self.parsed) if self.parsed and self.lines > self.parsed else 1.0
        sampled = scale > 1.0
        whole = round(n * scale)

        def est(c: int) -> int:
            return round(c * scale)

        def margin(c: int) -> int:
            return margin95(c * scale, n, whole) if sampled else 0

        def counts(counter: Counter) -> tuple[dict[str, int], dict[str, int]]:
            items = counter.most_common()
            return ({str(k): est(v) for k, v in items}, {str(k): margin(v) for k, v in items})

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
        by = {name: counts(c) for name, c in (("by_l3", self.by_l3), ("by_l4", self.by_l4),
                                               ("by_flag", self.by_flag),
                                               ("by_zone", self.by_zone))}
        top_ports = self.top_ports()
        top_dsts = self.addrs.most_common(TOP_K)
        lines = n + self.malformed
        return {
            "entries_read": n,
            "entries_estimated": whole,
            "sampled": sampled,
            "scale": round(scale, 6),
            "lines_read": self.lines,
            "every": self.every,
            "offloaded": est(self.offloaded),
            "malformed": self.malformed,
            "malformed_share": round(self.malformed / lines, 6) if lines else 0.0,
            "malformed_examples": self.malformed_examples,
            "malformed_kinds": [{"kind": k, "lines": c, "example": ex}
                                for k, (c, ex) in sorted(self.malformed_kinds.items(),
                                                         key=lambda kv: -kv[1][0])],
            "summary_lines": self.summary_lines,
            **{name: values for name, (values, _) in by.items()},
            "top_dports": [[p, est(c)] for p, c in top_ports],
            "top_dsts": [[a, est(c)] for a, c in top_dsts],
            "top_dsts_approximate": self.addrs_pruned,
            "margins": {
                "offloaded": margin(self.offloaded),
                **{name: margins for name, (_, margins) in by.items()},
                "top_dports": [[p, margin(c)] for p, c in top_ports],
                "top_dsts": [[a, margin(c)] for a, c in top_dsts],
            },
            "classes": classes,
        }


def malformed_kind(error: Exception) -> str:
    """The kind of an unreadable line, from the parser's reason (a few, bounded)."""
    if isinstance(error, (IndexError, OverflowError)):
        return "port above 65535"
    reason = str(error)
    for prefix, kind in (("line longer", f"longer than {MAX_LINE} characters"),
                         ("not a conntrack", "not a conntrack entry"),
                         ("truncated", "truncated (no use=)"),
                         ("no timeout", "no timeout, not offloaded")):
        if reason.startswith(prefix):
            return kind
    return "unreadable number"


def _sparse(hist: array, scale: float) -> dict[str, int]:
    return {str(i): round(c * scale) for i, c in enumerate(hist) if c}
