"""Parsers for conntrack table lines: /proc/net/nf_conntrack and ``conntrack -L`` output.

Two entry points over one format:

* :func:`parse_line` decodes every field of a line (both tuples, flags, mark,
  secctx, zone, delta-time, use, accounting) for tests, debugging and anything
  that needs the whole entry.
* :func:`scan_line` extracts only what the aggregates need, with C-level string
  operations, because it runs once per entry on tables of a million entries.
* :func:`scan_block` gives the same fields for a whole block of lines at once,
  one regex pass in C with no Python code per line, or None when any line of
  the block is not in the plain form it can vouch for (the caller then falls
  back to scan_line line by line).  Even scan_line's per-line call costs more
  than the kernel takes to print the line.  It first tries a pattern for the
  kernel's exact layout, which needs no other pass over the block, then a
  general one for every plain layout (conntrack -L, old kernels), which does.

The property tests check that scan_line agrees with parse_line on every line
they generate, and that a block scanned at once aggregates exactly like its
lines one by one, so the fast paths cannot drift from the full one.
parse_line and scan_line raise ValueError on a malformed line; callers count
those, never stop on them.  The summary line conntrack(8) prints after a listing
(``conntrack v1.4.7 (conntrack-tools): 20 flow entries have been shown.``, on
stderr, but pasted with the table) raises :class:`NotAnEntry`, a ValueError that
callers count apart: it is neither an entry nor a malformed line.

Format (procfs; ``conntrack -L`` lacks the leading "ipv4 2" unless ``-o extended``)::

    ipv4 2 tcp 6 431999 ESTABLISHED src=.. dst=.. sport=.. dport=.. [packets=.. bytes=..]
    [UNREPLIED] src=.. dst=.. sport=.. dport=.. [packets=.. bytes=..] [ASSURED] mark=0
    [secctx=..] [zone=N] [delta-time=N] use=2

The variants every printer has produced (each one is a fixture in tests/fixtures/):

* offloaded entries (nf_flow_table): no timeout and no TCP state, and [OFFLOAD] or
  [HW_OFFLOAD] where [ASSURED] would be.  The kernel's ct_seq_show
  (net/netfilter/nf_conntrack_standalone.c) prints the timeout only without
  IPS_OFFLOAD_BIT, and tcp_print_conntrack (nf_conntrack_proto_tcp.c) returns
  early for it; ctnetlink_dump_info (nf_conntrack_netlink.c) leaves out
  CTA_TIMEOUT and CTA_PROTOINFO, so ``conntrack -L`` prints neither either.  The
  offload keeps refreshing such an entry, so its seconds left say nothing of idle
  time: offloaded entries are counted, never put in an idle histogram.
* GRE on older kernels (still in 5.4, gone from current ones): gre_print_conntrack
  (nf_conntrack_proto_gre.c) printed
  ``timeout=600, stream_timeout=18000`` after the seconds left, and keys as
  ``srckey=0x0 dstkey=0x0``.
* the pre-nf_conntrack /proc/net/ip_conntrack: no layer 3 columns, as conntrack -L.
* libnetfilter_conntrack's __snprintf_conntrack_default (snprintf_default.c):
  ``zone-orig=``/``zone-reply=`` after a tuple, ``secmark=``, ``helper=``,
  ``delta-time=N``, with ``-o ktimestamp`` ``[start=Thu Feb 17 17:41:18 2011]`` and
  ``[stop=...]`` (a ctime() date: spaces inside the brackets), ``id=N`` (``-o id``)
  and ``labels=`` after use=, and in releases before 2010 ``zone=N`` after use=.
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: The longest line taken as an entry, in characters without its newline.  The kernel
#: prints an entry in well under 400 (ipv6 with accounting, secctx and zone); anything
#: longer is malformed, and the limit keeps every parse linear in the input (numbers
#: stay under Python's 4300-digit int conversion limit too).
MAX_LINE = 4096

L3_NAMES = ("ipv4", "ipv6")
TUPLE_KEYS = ("src", "dst", "sport", "dport", "type", "code", "id", "srckey", "dstkey",
              "packets", "bytes")
FLAGS = ("UNREPLIED", "ASSURED", "OFFLOAD", "HW_OFFLOAD")
#: Flag bits (scan_line) of an entry the flow table has offloaded.
OFFLOADED = 4 | 8


class NotAnEntry(ValueError):
    """A line conntrack(8) prints around a listing (its closing count): not an entry,
    and not a malformed one either."""


#: conntrack(8)'s closing line, e.g. "conntrack v0.9.15 (conntrack-tools): 20 flow entries
#: have been shown." (conntrack-tools src/conntrack.c, exit_msg, printed on stderr).
_SUMMARY = re.compile(r"\s*conntrack v[0-9][\w.~+-]* \(conntrack-tools\): ")


def is_summary(line: str) -> bool:
    """Whether `line` is conntrack(8)'s closing summary line."""
    return line[:1] in "c \t" and _SUMMARY.match(line) is not None


class Flow(NamedTuple):
    l3: str
    l4: str
    l4num: int
    ttl: int | None        # None: offloaded, the printer gives no timeout
    state: str | None
    orig: dict[str, str]
    reply: dict[str, str]
    flags: frozenset[str]
    extra: dict[str, str]   # mark, secctx, zone, delta-time, use, ...

    @property
    def zone(self) -> int:
        return int(self.extra.get("zone", 0))

    @property
    def offloaded(self) -> bool:
        return "OFFLOAD" in self.flags or "HW_OFFLOAD" in self.flags


def _check_length(line: str) -> None:
    if len(line) > MAX_LINE and len(line.rstrip("\n")) > MAX_LINE:
        raise ValueError(f"line longer than {MAX_LINE} characters")


def _l3_of(dst: str | None) -> str:
    return "ipv6" if dst is not None and ":" in dst else "ipv4"


def parse_line(line: str) -> Flow:
    """Every field of one conntrack line."""
    _check_length(line)
    t = line.split()
    if t and t[0] == "conntrack" and is_summary(line):
        raise NotAnEntry("conntrack(8) summary line")
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
    tok = t[i + 2]
    try:
        l4num = int(t[i + 1])
        # no timeout: a state, a key=value or a flag follows the protocol number
        ttl: int | None = None if "=" in tok or tok[:1].isupper() or tok[:1] == "[" else int(
            tok if tok.isdecimal() else "x")
    except ValueError:
        raise ValueError("protocol number or timeout is not an integer") from None
    j = i + 2 if ttl is None else i + 3
    state = None
    if "=" not in t[j] and not t[j].startswith("["):
        state = t[j]
        j += 1
    orig: dict[str, str] = {}
    reply: dict[str, str] = {}
    flags: set[str] = set()
    extra: dict[str, str] = {}
    cur = orig
    toks = iter(t[j:])
    for tok in toks:
        if tok.startswith("["):
            if not tok.endswith("]"):
                # [start=Thu Feb 17 17:41:18 2011]: a ctime() date, spaces inside
                words = [tok]
                for word in toks:
                    words.append(word)
                    if word.endswith("]"):
                        break
                else:
                    raise ValueError(f"unclosed {tok[:30]!r}")
                tok = " ".join(words)
            key, eq, value = tok[1:-1].partition("=")
            if eq:
                extra[key] = value
            else:
                flags.add(key)
            continue
        key, eq, value = tok.partition("=")
        if not eq:
            raise ValueError(f"unexpected token {tok[:30]!r}")
        if "use" in extra:  # after use=: -o id's id=, labels=, an old zone=
            extra[key] = value
            continue
        if key == "src" and "src" in orig:
            cur = reply
        if key in TUPLE_KEYS:
            if key in cur:
                raise ValueError(f"{key}= repeated in one tuple")
            cur[key] = value
        else:
            extra[key] = value.rstrip(",")  # old GRE: "timeout=600, stream_timeout=18000"
    if "src" not in orig or "dst" not in orig:
        raise ValueError("no original tuple (src=/dst=)")
    if "use" not in extra:
        raise ValueError("truncated line (no use=)")
    offloaded = "OFFLOAD" in flags or "HW_OFFLOAD" in flags
    if ttl is None and not offloaded:
        raise ValueError("no timeout (and not offloaded)")
    return Flow(l3 or _l3_of(orig.get("dst")), l4, l4num, ttl, state, orig, reply,
                frozenset(flags), extra)


#: One anchored match for the fields before the flags: l3, l4, ttl, state, dst, dport.
#: The timeout is missing for an offloaded entry; "timeout=N, stream_timeout=N" is old
#: GRE's (see the module docstring).
_SCAN = re.compile(r"\s*(?:(ipv[46])\s+\d+\s+)?(\S+)\s+\d+\s+(?:(\d+)\s+)?"
                   r"(?:([A-Z][A-Z_0-9]*)\s+)?(?:timeout=\d+,\s+stream_timeout=\d+\s+)?"
                   r"src=\S+\s+dst=(\S+)(?:\s+sport=\d+\s+dport=(\d+))?")


def scan_line(line: str
              ) -> tuple[str, str, str | None, int | None, str | None, str | None, int, int]:
    """The aggregate fields only: (l3, l4, state, ttl, dst, dport, flag bits, zone).

    Flag bits: 1 UNREPLIED, 2 ASSURED, 4 OFFLOAD, 8 HW_OFFLOAD.  ttl is None for an
    offloaded entry that was printed without one.
    """
    _check_length(line)
    m = _SCAN.match(line)
    if m is None:
        if is_summary(line):
            raise NotAnEntry("conntrack(8) summary line")
        raise ValueError("not a conntrack entry (no protocol, timeout and src=/dst=)")
    if " use=" not in line:
        raise ValueError("truncated line (no use=)")
    l3, l4, ttl, st, dst, dport = m.groups()
    flags = 0
    if "[" in line:
        flags = (("[UNREPLIED]" in line) | ("[ASSURED]" in line) << 1
                 | ("[OFFLOAD]" in line) << 2 | ("[HW_OFFLOAD]" in line) << 3)
    if ttl is None and not flags & OFFLOADED:
        raise ValueError("no timeout (and not offloaded)")
    z = line.find(" zone=")
    zone = int(line[z + 6:].split(None, 1)[0]) if z >= 0 else 0
    return (l3 or _l3_of(dst), l4, st, None if ttl is None else int(ttl), dst, dport, flags,
            zone)


#: scan_block's flag names (the bracketed tokens without brackets) -> scan_line's bits.
FLAG_BITS = {"UNREPLIED": 1, "ASSURED": 2, "OFFLOAD": 4, "HW_OFFLOAD": 8}
OFFLOAD_FLAGS = frozenset(("OFFLOAD", "HW_OFFLOAD"))


class Columns(NamedTuple):
    """scan_line's fields for every line of a block, one tuple per field, in line order.

    Missing values are "" where scan_line gives None (state, dport, ttl) or 0 (flag
    tokens); flag1/flag2 hold the names of the bracketed flag tokens of a line, without
    brackets (FLAG_BITS maps them to scan_line's bits, an unknown name to none); ttl and zone are
    decimal strings; zone is None when every line of the block is in zone 0.
    """

    l3: tuple[str, ...]
    l4: tuple[str, ...]
    state: tuple[str, ...]
    ttl: tuple[str, ...]
    dst: tuple[str, ...]
    dport: tuple[str, ...]
    flag1: tuple[str, ...]
    flag2: tuple[str, ...]
    zone: tuple[str, ...] | None


#: The ASCII characters that \s matches besides " " and "\n" (str.isspace() agrees).
_ODD_SPACE = "\t\x0b\x0c\r\x1c\x1d\x1e\x1f"

# _SCAN for a block of lines.  _scan_general runs it on "\n" + block, so every match starts at
# the "\n" before a line: a literal the search finds at C speed, where "^" with re.M is tried
# at every character (that alone was a third of the time).  The part in (?>...) is _SCAN
# with \s written as " " and \S as [^ ]: _scan_general only runs it on ASCII blocks whose only
# whitespace is " " and "\n", where \d is [0-9], \s can only be " " (no \s of a successful
# _SCAN match can take a line's final "\n": each one is followed by something that is not
# whitespace) and [^ ] is \S but for "\n".  A match that ran through a "\n" into the next
# line would take that line's own starting "\n" with it, leaving fewer matches than lines,
# which _scan_general refuses: so every match it keeps lies within its line.  The atomic group
# keeps _SCAN's first match, so what follows can fail a line but never re-split it.  An
# optional part is written (?:X|) rather than (?:X)?: the same match without the general
# repeat machinery, and [^ ] rather than \S: a one-character loop instead of a category
# test per character (each measured: a tenth to a quarter of the time).
#
# Then the flags, by name without brackets: " [UNREPLIED]" right after the original tuple
# (where the kernel prints it unless accounting or a zone-orig= comes between), the last
# bracketed token after that (where [ASSURED], [OFFLOAD] or [HW_OFFLOAD] are printed, after
# the reply tuple; an [UNREPLIED] further on lands here too), and " use=".  Each search is
# a greedy ".*" walked back from the end of the line to the last "[" (or space): no retry
# at every character.  _scan_general checks that the tokens captured are all the "[" of the
# block, so the flag substrings scan_line looks for anywhere in a line are exactly these
# tokens; a block where that fails (a third token, an [UNREPLIED] before an accounting
# tuple and another token after it) is scanned line by line.
#
# Linear whatever the line: _scan_general first refuses a block with a line over MAX_LINE
# characters (scan_line refuses them too), and each search of a line is atomic or ends in
# a literal found walking back once, so a line without " use=" fails at once.
_HEAD = (r"\n(?> *(?:(ipv[46]) +[0-9]+ +|)([^ ]+) +[0-9]+ +(?:([0-9]+) +|)"
         r"(?:([A-Z][A-Z_0-9]*) +|)(?:timeout=[0-9]+, +stream_timeout=[0-9]+ +|)"
         r"src=[^ ]+ +dst=([^ ]+)(?: +sport=[0-9]+ +dport=([0-9]+)|))"
         r"(?: \[(UNREPLIED)\]|)(?>.*\[([A-Z_]+)\]|)")
_BLOCK = re.compile(_HEAD + r".* use=")
# The same, also taking the value of the last " zone=" (_scan_general checks it is the only one
# of its line, so it is the first, as scan_line takes), for blocks with zones other than 0.
_BLOCK_ZONE = re.compile(_HEAD + r"(?>.* zone=([0-9]+)(?= )).* use=")


# The kernel's own layout, tried first: ct_seq_show (net/netfilter/nf_conntrack_standalone.c)
# prints "%-8s %u %-8s %u " (layer 3 and 4 names padded, their numbers), the seconds left
# unless offloaded, the state (print_conntrack), each tuple as print_tuple does ("src=%pI4
# dst=%pI4 " then the layer 4 keys: sport/dport, icmp's type/code/id, gre's srckey/dstkey,
# none for the rest), "packets=.. bytes=.. " (seq_print_acct) after each, "[UNREPLIED] "
# between them, one of "[HW_OFFLOAD] " / "[OFFLOAD] " / "[ASSURED] ", then "mark=%u ",
# "secctx=%s ", "zone=%u ", "delta-time=%llu " and "use=%u\n".  Every token of the line is
# matched, with single spaces, and the match must end at the line's newline, so a line it
# takes has no other token: its flags are the bracketed tokens captured (no address or
# secctx class admits "[", " " or a newline), its only " zone=" the one captured, and it is
# ASCII without odd whitespace.  Every repeat is bounded, so a line it takes is far under
# MAX_LINE characters (tests check the pattern's width) and the per-line checks of the
# general pattern (one pass over the block each: line lengths, zones, brackets, characters)
# are not needed.  No match can hold a newline but its leading one, so the number of
# matches is the number of lines taken, and each token's class decides which optional part
# it is, so the match is the one _SCAN finds (the property tests check scan_line agrees).
#
# Linear whatever the input: a match starts only at a line's start (the block's, or a
# newline), each part has one way to match a token (its first characters decide), and the
# longest match is under a thousand characters, so no line costs more than a bounded amount.
#
# Three captures are single characters, which Python gives without making a new string
# each time: the layer 3 version, the U of [UNREPLIED], and the first letter of the last
# flag (a lookbehind pins the rest of the name); _scan_kernel maps them back to the names
# Columns holds.  The zone is "0" on almost every line, a single character too.
_N = "[0-9]{1,20}"
_ADDR = "[0-9a-f.:]{1,45}"                     # %pI4, %pI6c (lower-case hex, dotted quad)
_ACCT = f"(?:packets={_N} bytes={_N} |)"
_KEYS = f"type={_N} code={_N} id={_N} |srckey=0x[0-9a-f]{{1,8}} dstkey=0x[0-9a-f]{{1,8}} |"
_KERNEL = (f"ipv([46]) {{1,8}}[0-9]{{1,3}} ([a-z][a-z0-9]{{0,15}}) {{1,8}}[0-9]{{1,3}} "
           f"(?:({_N}) |)(?:([A-Z][A-Z_0-9]{{0,31}}) |)"
           f"src={_ADDR} dst=({_ADDR}) (?:sport={_N} dport=({_N}) |{_KEYS}){_ACCT}"
           f"(?:\\[(U)NREPLIED\\] |)"
           f"src={_ADDR} dst={_ADDR} (?:sport={_N} dport={_N} |{_KEYS}){_ACCT}"
           f"(?:\\[([AOH])(?:(?<=A)SSURED|(?<=O)FFLOAD|(?<=H)W_OFFLOAD)\\] |)"
           f"(?:mark={_N} |)(?:secctx=[!-Z\\\\-~]{{1,255}} |)(?:zone=([0-9]{{1,10}}) |)"
           f"(?:delta-time={_N} |)use={_N}(?=\\n)")
#: The first line of a block (no newline before it: matching it apart saves a copy of the
#: block with one prepended) and every other line, found from the newline that starts it.
_KERNEL_FIRST = re.compile(_KERNEL)
_KERNEL_REST = re.compile(f"\\n(?:{_KERNEL}|)")
_L3_OF = {"4": "ipv4", "6": "ipv6"}
_FLAG1_OF = {"U": "UNREPLIED", "": ""}
_FLAG2_OF = {"A": "ASSURED", "O": "OFFLOAD", "H": "HW_OFFLOAD", "": ""}


def _names(col: tuple[str, ...], names: dict[str, str]) -> tuple[str, ...]:
    """A column of single-character captures as the names they stand for."""
    n = len(col)
    if col.count(col[0]) == n:  # one value for the whole block: the common case
        return (names[col[0]],) * n
    return tuple(map(names.__getitem__, col))


def scan_block(block: str) -> Columns | None:
    """scan_line of every line of `block` (whole lines, each ending in a newline) in one
    pass, or None unless every line is in the plain form this can vouch for."""
    cols = _scan_kernel(block)
    return cols if cols is not None else _scan_general(block)


def _scan_kernel(block: str) -> Columns | None:
    """scan_block for blocks of lines in the kernel's layout only (the comment above
    _KERNEL), or None."""
    m = _KERNEL_FIRST.match(block)
    if m is None or not block.endswith("\n"):
        return None
    # a row for each newline after the first: the next line's, or an empty one where that
    # line is not in the kernel's layout (and after the block's last newline)
    rows = _KERNEL_REST.findall(block, m.end())
    rows.pop()
    rows.insert(0, m.groups(""))
    l3, l4, ttl, state, dst, dport, flag1, flag2, zone = zip(*rows, strict=True)
    if "" in l4:  # a line _KERNEL did not take
        return None
    # no timeout: scan_line takes it only from an offloaded entry
    if "" in ttl and any(not t and f not in ("O", "H") for t, f in zip(ttl, flag2, strict=True)):
        return None
    n = len(zone)
    zones: tuple[str, ...] | None = None
    if zone.count("0") + zone.count("") != n:
        zones = tuple(z or "0" for z in zone)
    return Columns(_names(l3, _L3_OF), l4, state, ttl, dst, dport, _names(flag1, _FLAG1_OF),
                   _names(flag2, _FLAG2_OF), zones)


def _scan_general(block: str) -> Columns | None:
    """scan_block for any layout _SCAN takes (the whole comment above _HEAD)."""
    if (not block.endswith("\n") or not block.isascii()
            or any(c in block for c in _ODD_SPACE)):
        return None
    lines = block.split("\n")
    n = len(lines) - 1
    if max(map(len, lines)) > MAX_LINE:
        return None
    del lines
    # Every "zone=" followed by "0 ": scan_line reads zone 0 from each line.  (Counted
    # without the space before it: a rare first letter is searched for much faster.)
    zoned = block.count("zone=") != block.count("zone=0 ")
    rows = (_BLOCK_ZONE if zoned else _BLOCK).findall("\n" + block)
    if len(rows) != n or (zoned and block.count(" zone=") != n):
        return None
    cols = list(zip(*rows, strict=True))
    flag1, flag2 = cols[6], cols[7]
    if block.count("[") != 2 * n - flag1.count("") - flag2.count(""):
        return None
    # no timeout: scan_line takes it only from an offloaded entry (its token is the last)
    if "" in cols[2] and any(not t and f not in OFFLOAD_FLAGS
                             for t, f in zip(cols[2], flag2, strict=True)):
        return None
    l3, dst = cols[0], cols[4]
    if "" in l3:  # conntrack -L prints no layer 3 name: scan_line takes it from dst
        l3 = tuple(a or _l3_of(d) for a, d in zip(l3, dst, strict=True))
    return Columns(l3, cols[1], cols[3], cols[2], dst, cols[5], flag1, flag2,
                   cols[8] if zoned else None)


def block_lines(block: str) -> list[str]:
    """The lines of a block as a text file gives them: split after each newline only."""
    lines = block.split("\n")
    last = lines.pop()
    out = [line + "\n" for line in lines]
    if last:
        out.append(last)
    return out
