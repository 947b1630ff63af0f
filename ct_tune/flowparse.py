"""Parsers for conntrack table lines: /proc/net/nf_conntrack and ``conntrack -L`` output.

Two entry points over one format:

* :func:`parse_line` decodes every field of a line (both tuples, flags, mark,
  secctx, zone, delta-time, use, accounting) for tests, debugging and anything
  that needs the whole entry.
* :func:`scan_line` extracts only what the aggregates need, with C-level string
  operations, because it runs once per entry on tables of a million entries.

The property tests check that scan_line agrees with parse_line on every line
they generate, so the fast path cannot drift from the full one.  Both raise
ValueError on a malformed line; callers count those, never stop on them.

Format (procfs; ``conntrack -L`` lacks the leading "ipv4 2")::

    ipv4 2 tcp 6 431999 ESTABLISHED src=.. dst=.. sport=.. dport=.. [packets=.. bytes=..]
    [UNREPLIED] src=.. dst=.. sport=.. dport=.. [packets=.. bytes=..] [ASSURED] mark=0
    [secctx=..] [zone=N] [delta-time=N] use=2
"""

from __future__ import annotations

import re
from typing import NamedTuple

L3_NAMES = ("ipv4", "ipv6")
TUPLE_KEYS = ("src", "dst", "sport", "dport", "type", "code", "id", "packets", "bytes")
FLAGS = ("UNREPLIED", "ASSURED", "OFFLOAD", "HW_OFFLOAD")


class Flow(NamedTuple):
    l3: str
    l4: str
    l4num: int
    ttl: int
    state: str | None
    orig: dict[str, str]
    reply: dict[str, str]
    flags: frozenset[str]
    extra: dict[str, str]   # mark, secctx, zone, delta-time, use, ...

    @property
    def zone(self) -> int:
        return int(self.extra.get("zone", 0))


def _l3_of(dst: str | None) -> str:
    return "ipv6" if dst is not None and ":" in dst else "ipv4"


def parse_line(line: str) -> Flow:
    """Every field of one conntrack line."""
    t = line.split()
    if len(t) < 4:
        raise ValueError("truncated line")
    if t[0] in L3_NAMES:
        l3: str | None = t[0]
        i = 2
    else:
        l3 = None
        i = 0
    if len(t) < i + 4:
        raise ValueError("truncated line")
    l4 = t[i]
    try:
        l4num = int(t[i + 1])
        ttl = int(t[i + 2])
    except ValueError:
        raise ValueError("protocol number or timeout is not an integer") from None
    j = i + 3
    state = None
    if "=" not in t[j] and not t[j].startswith("["):
        state = t[j]
        j += 1
    orig: dict[str, str] = {}
    reply: dict[str, str] = {}
    flags: set[str] = set()
    extra: dict[str, str] = {}
    cur = orig
    for tok in t[j:]:
        if tok.startswith("[") and tok.endswith("]"):
            flags.add(tok[1:-1])
            continue
        key, eq, value = tok.partition("=")
        if not eq:
            raise ValueError(f"unexpected token {tok[:30]!r}")
        if key == "src" and "src" in orig:
            cur = reply
        if key in TUPLE_KEYS:
            if key in cur:
                raise ValueError(f"{key}= repeated in one tuple")
            cur[key] = value
        else:
            extra[key] = value
    if "src" not in orig or "dst" not in orig:
        raise ValueError("no original tuple (src=/dst=)")
    if "use" not in extra:
        raise ValueError("truncated line (no use=)")
    return Flow(l3 or _l3_of(orig.get("dst")), l4, l4num, ttl, state, orig, reply,
                frozenset(flags), extra)


#: One anchored match for the fields before the flags: l3, l4, ttl, state, dst, dport.
_SCAN = re.compile(r"\s*(?:(ipv[46])\s+\d+\s+)?(\S+)\s+\d+\s+(\d+)\s+(?:([A-Z][A-Z_0-9]*)\s+)?"
                   r"src=\S+\s+dst=(\S+)(?:\s+sport=\d+\s+dport=(\d+))?")


def scan_line(line: str) -> tuple[str, str, str | None, int, str | None, str | None, int, int]:
    """The aggregate fields only: (l3, l4, state, ttl, dst, dport, flag bits, zone).

    Flag bits: 1 UNREPLIED, 2 ASSURED, 4 OFFLOAD, 8 HW_OFFLOAD.
    """
    m = _SCAN.match(line)
    if m is None:
        raise ValueError("not a conntrack entry (no protocol, timeout and src=/dst=)")
    if " use=" not in line:
        raise ValueError("truncated line (no use=)")
    l3, l4, ttl, st, dst, dport = m.groups()
    flags = 0
    if "[" in line:
        flags = (("[UNREPLIED]" in line) | ("[ASSURED]" in line) << 1
                 | ("[OFFLOAD]" in line) << 2 | ("[HW_OFFLOAD]" in line) << 3)
    z = line.find(" zone=")
    zone = int(line[z + 6:line.find(" ", z + 6)]) if z >= 0 else 0
    return (l3 or _l3_of(dst), l4, st, int(ttl), dst, dport, flags, zone)
