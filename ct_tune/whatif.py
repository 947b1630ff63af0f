"""What-if projections from a table sample: what a different timeout would do.

Pure functions over the ``flows`` summary (see flows.FlowStats.summary); rules
call them through the expression sandbox.  Two questions matter before a
timeout is lowered or raised:

* Which tracked flows have been idle longer than the proposed timeout?  Under
  it they would already have been forgotten: the pooled connection that dies
  overnight behind a stateful firewall (RFC 5382 REQ-5).  The sample keeps
  each class's idle histogram and the destination ports per coarse idle bin.
* How full would the table be?  Little's law: entries = arrival rate x hold
  time.  The entries of a class that reach idle age t arrive at the density of
  the idle histogram at t, so the occupancy under a timeout T' is the number
  of entries idle less than T' (lowering), or the current count plus the tail
  density times the extra seconds (raising).  For classes whose entries always
  sit out the full timeout (TIME_WAIT, unreplied UDP) the density is flat and
  this is exactly rate x timeout.

Idle histograms are binned (at most 1024 bins per class), so counts are exact
to within one bin (every result says the bin width); the ports of idle flows
are kept per idle octave, so they are exact to within a factor of two in time.

A sample cut short by --sample-limit, or parsed from every k-th line of a large
table, is scaled up to the whole table: every count below is then an estimate,
and each comes with its 95 % sampling margin (``*_margin``, formulas.margin95; 0
for a whole table) so texts say "4,263 ± 1,210" rather than a number that looks
exact.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ct_tune.formulas import human_duration, margin95
from ct_tune.sysctlkeys import short_name

_PREFIX = "net.netfilter."
#: Fraction of the idle range, at its old end, whose density extrapolates a raised timeout.
TAIL = 0.1
TAIL_BINS = 8


def _classes(flows: Mapping[str, Any] | None, key: str) -> list[dict[str, Any]]:
    if not flows:
        return []
    short = short_name(key)
    return [c for c in flows.get("classes", {}).values() if short_name(c["timeout_key"]) == short]


def _beyond(cls: Mapping[str, Any], seconds: float) -> float:
    """Entries of one class idle longer than `seconds` (the straddling bin pro rata)."""
    width = cls["idle_bin_seconds"]
    total = 0.0
    for idx, count in cls["idle_histogram"].items():
        lo = int(idx) * width
        hi = lo + width
        if lo >= seconds:
            total += count
        elif hi > seconds:
            total += count * (hi - seconds) / width
    return total


def _tail_rate(cls: Mapping[str, Any]) -> float:
    """Entries per second reaching the old timeout: the idle density over its last bins.

    The kernel prints whole seconds left, rounded down, so the bin at the timeout
    holds a full bin's worth; the window is at least TAIL_BINS bins so a one-bin
    rounding error costs at most 1/TAIL_BINS of the rate."""
    width = cls["idle_bin_seconds"]
    last = cls["timeout"] // width
    nbins = min(last + 1, max(TAIL_BINS, math.ceil(TAIL * cls["timeout"] / width)))
    hist = cls["idle_histogram"]
    count = sum(hist.get(str(i), 0) for i in range(last - nbins + 1, last + 1))
    return count / (nbins * width)


def _held(cls: Mapping[str, Any], seconds: float) -> float:
    """Little's-law occupancy of one class under a timeout of `seconds`."""
    if seconds < cls["timeout"]:
        return cls["entries"] - _beyond(cls, seconds)
    return cls["entries"] + _tail_rate(cls) * (seconds - cls["timeout"])


def _ports_beyond(flows: Mapping[str, Any] | None, classes: list[dict[str, Any]],
                  seconds: float, k: int) -> list[list[Any]]:
    """Top destination ports among entries idle longer than `seconds`, as [port, entries,
    margin] (margin: the 95 % sampling margin, 0 for a whole table).  Ports are kept
    per idle octave (bin j: [2**(j-1), 2**j) s); in the octave that straddles `seconds`
    they count in the share of that octave's entries the fine idle histogram puts
    beyond `seconds`."""
    ports: Counter[str] = Counter()
    for cls in classes:
        for j, bin_ports in enumerate(cls["idle_ports"]):
            lo, hi = (0, 1) if j == 0 else (2 ** (j - 1), 2 ** j)
            if hi <= seconds or not bin_ports:
                continue
            weight = 1.0
            if lo < seconds:
                in_octave = _beyond(cls, lo) - _beyond(cls, hi)
                weight = (_beyond(cls, seconds) - _beyond(cls, hi)) / in_octave if (
                    in_octave > 0) else 0.0
            for port, n in bin_ports.items():
                ports[port] += n * weight
    return [[int(p), round(n), detail_margin(flows, n)] for p, n in ports.most_common(k)
            if round(n) > 0]


def sample_margin(flows: Mapping[str, Any] | None, estimate: float) -> int:
    """95 % margin of a count estimated from the sample (0 when the whole table was read)."""
    if not flows or not flows.get("sampled"):
        return 0
    total = flows.get("entries_estimated") or 0
    return margin95(min(estimate, total), flows.get("entries_read") or 0, total)


def sample_basis(flows: Mapping[str, Any] | None) -> str:
    """Why the sample's counts are estimates, in words ("" when they are not): a reader
    of "± 850" on a table that was read whole deserves to know what was left out."""
    if not flows or not flows.get("sampled"):
        return ""
    read, whole = flows.get("entries_read") or 0, flows.get("entries_estimated") or 0
    every = flows.get("every") or 1
    if every > 1 and not flows.get("limit"):
        return (f"the table was read whole ({flows.get('lines_read') or 0:,} lines) and "
                f"{read:,} entries parsed, every {_ordinal(every)} line, then scaled up to "
                f"{whole:,}")
    return (f"the sample was cut short by --sample-limit at {read:,} entries and scaled up "
            f"to the table's count ({whole:,})")


def _basis(flows: Mapping[str, Any] | None) -> dict[str, str]:
    """{"basis": sample_basis(flows)} for an estimate, nothing for exact counts (an empty
    line of evidence says nothing)."""
    basis = sample_basis(flows)
    return {"basis": basis} if basis else {}


def _ordinal(n: int) -> str:
    if n % 100 in (11, 12, 13):
        return f"{n}th"
    return f"{n}{({1: 'st', 2: 'nd', 3: 'rd'}).get(n % 10, 'th')}"


def detail_margin(flows: Mapping[str, Any] | None, estimate: float) -> int:
    """95 % margin of a port or address count: sample_margin, and for a snapshot of 0.1
    before the line sample, whose ports and addresses alone were counted from every
    detail_every-th entry (flows.detail_entries), the margin of that smaller sample."""
    if not flows:
        return 0
    total = flows.get("entries_estimated") or 0
    read = flows.get("detail_entries", flows.get("entries_read")) or 0
    if not read or read >= total:
        return 0
    return margin95(min(estimate, total), read, total)


def pm(margin: Any) -> str:
    """The text after an estimated count: " ± margin", or nothing for an exact count."""
    return f" \u00b1 {int(margin):,}" if margin else ""


def whatif(flows: Mapping[str, Any] | None, key: str, seconds: float | None,
           k: int = 5) -> dict[str, Any] | None:
    """The sample's answer for one timeout key set to `seconds`; None without a sample,
    without entries under that key, or without a value to try."""
    classes = _classes(flows, key)
    entries = sum(c["entries"] for c in classes)
    if not entries or seconds is None:
        return None
    current = max(c["timeout"] for c in classes)
    idle = sum(_beyond(c, seconds) for c in classes) if seconds < current else 0.0
    projected = round(sum(_held(c, seconds) for c in classes))
    return {
        "entries": entries,
        "entries_margin": sample_margin(flows, entries),
        "timeout": current,
        "proposed": seconds,
        "idle_beyond": round(idle),
        "idle_beyond_margin": sample_margin(flows, idle),
        "idle_beyond_share": round(idle / entries, 4),
        "top_dports": _ports_beyond(flows, classes, seconds, k) if idle >= 0.5 else [],
        "projected": projected,
        # the sampling margin only: not the error of the Little's-law model
        "projected_margin": sample_margin(flows, projected),
        "bin_seconds": max(c["idle_bin_seconds"] for c in classes),
        **_basis(flows),
    }


def occupancy(flows: Mapping[str, Any] | None,
              planned: Mapping[str, Any]) -> dict[str, Any] | None:
    """The whole sampled table under every planned timeout (unplanned keys stay as
    they are): entries now and projected, and the flows the changes would forget."""
    if not flows or not flows.get("classes"):
        return None
    keys = sorted({short_name(c["timeout_key"]) for c in flows["classes"].values()})
    now = projected = forgotten = 0
    changes = []
    for key in keys:
        classes = _classes(flows, key)
        current = max(c["timeout"] for c in classes)
        new = planned.get(key)
        result = whatif(flows, key, new if isinstance(new, (int, float)) else current)
        if result is None:
            continue
        now += result["entries"]
        projected += result["projected"]
        forgotten += result["idle_beyond"]
        if result["proposed"] != current:
            changes.append({"key": _PREFIX + key, **result})
    # the sample may be scaled: say the total the estimate refers to
    return {"entries": now, "entries_margin": sample_margin(flows, now),
            "projected": projected, "projected_margin": sample_margin(flows, projected),
            "idle_beyond": forgotten, "idle_beyond_margin": sample_margin(flows, forgotten),
            "change": (projected - now) / now if now else 0.0, "changes": changes,
            **_basis(flows)}


def oldest_idle(classes: Sequence[Mapping[str, Any]]) -> int | None:
    """The longest any sampled entry of these classes has been idle, in seconds (the upper
    edge of the highest idle bin holding one, at most the timeout); None for none.

    A table whose every entry went quiet seconds ago cannot show what a lower timeout
    frees: its flows are new (a burst, a table just flushed or a namespace just made) or
    still sending, and the what-if of any timeout above this is 0 now."""
    edges = [min(c["timeout"], (max(int(i) for i, n in c["idle_histogram"].items() if n) + 1)
                 * c["idle_bin_seconds"])
             for c in classes if any(c["idle_histogram"].values())]
    return max(edges) if edges else None


def class_ports(cls: Mapping[str, Any], k: int) -> list[tuple[int, int]]:
    """A flow class's `k` busiest destination ports as (port, entries), over all its idle
    bins.  Each bin is scaled and rounded apart, so a port's sum may pass the class's own
    count by a rounding: it is capped there ("149,998 entries, port 8080 x 149,999")."""
    ports: Counter[str] = Counter()
    for bin_ports in cls["idle_ports"]:
        ports.update(bin_ports)
    return [(int(p), min(n, cls["entries"])) for p, n in ports.most_common(k)]


def share(flows: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """One flow class's weight in the sampled table: entries, share, its timeout key and
    value, the arrival rate Little's law implies, its top ports (each with its sampling
    margin).

    The rate is entries / timeout for a table in steady state; when no entry has been
    idle for half the timeout (a burst, a table just made), the entries came within the
    span of their idle times, so the rate is entries / that span ("span")."""
    if not flows:
        return None
    cls = flows.get("classes", {}).get(name)
    total = flows.get("entries_estimated") or 0
    if not cls or not total:
        return None
    oldest = oldest_idle([cls])
    span = oldest if oldest is not None and oldest <= cls["timeout"] / 2 else cls["timeout"]
    return {
        "class": name,
        "entries": cls["entries"],
        "margin": sample_margin(flows, cls["entries"]),
        "share": round(cls["entries"] / total, 4),
        "timeout_key": cls["timeout_key"],
        "timeout": cls["timeout"],
        "span": span,
        "rate": round(cls["entries"] / max(1, span), 2),
        # [port, entries, margin]: a port's count is an estimate like the class's
        "top_dports": [[p, n, detail_margin(flows, n)] for p, n in class_ports(cls, 5)],
    }


def describe(result: Mapping[str, Any] | None) -> str:
    """One paragraph for an explanation: what the sample says about a proposed timeout."""
    if not result:
        return ""
    new, old = result["proposed"], result["timeout"]
    text = (f"Table sample: {result['entries']:,}{pm(result.get('entries_margin'))} entries "
            f"are held by this timeout now ({human_duration(old)}).")
    if new < old:
        text += (f" {result['idle_beyond']:,}{pm(result.get('idle_beyond_margin'))} of them "
                 f"({result['idle_beyond_share']:.1%}) "
                 f"have been idle longer than {human_duration(new)} and would already have "
                 "been forgotten")
        if result["top_dports"]:
            ports = ", ".join(f"{p} x {n:,}{pm(m)}" for p, n, m in result["top_dports"])
            text += f" (top destination ports: {ports})"
        text += "."
    if new != old:
        text += (f" Under {human_duration(new)} the table would hold about "
                 f"{result['projected']:,}{pm(result.get('projected_margin'))} of them "
                 "(Little's law: entries = arrival rate x hold time, from the idle-time "
                 f"histogram at {result['bin_seconds']} s resolution).")
    if result.get("entries_margin"):
        text += (f" Estimates: {result.get('basis') or 'the table was sampled'}; \u00b1 is "
                 "the 95 % sampling margin.")
    return text
