"""This network namespace's own TCP sockets in the states that explain conntrack's
CLOSE_WAIT entries: /proc/net/tcp and /proc/net/tcp6.

A conntrack CLOSE_WAIT entry says one end has sent its FIN (acknowledged) and the
other has not closed yet.  When that other end is a socket of this host, it sits in
CLOSE_WAIT here and `ss` names the process that leaks it.  When the table holds many
such entries but this namespace has no (or far fewer) CLOSE_WAIT sockets, the end that
does not close is elsewhere: behind this host (forwarded or NATed flows, including
containers and pods in their own network namespaces), or the peer of a connection this
host closed (a local socket in FIN_WAIT2).  The counts tell the two apart.

/proc/net/tcp lists the sockets of the reader's network namespace (net/ipv4/tcp_ipv4.c
tcp4_seq_show(), get_tcp4_sock(): "%4d: %08X:%04X %08X:%04X %02X ..."; tcp6 prints
32-digit addresses, net/ipv6/tcp_ipv6.c get_tcp6_sock()); the state is the column
after the remote address, in hex (include/net/tcp_states.h: TCP_FIN_WAIT2 = 5,
TCP_CLOSE_WAIT = 8).  Files are read through the procfs root, so a captured tree
replays, in blocks within safeio.SOCKET_TABLE: a host with a million sockets costs
time, never memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from ct_tune import safeio
from ct_tune.errors import InputError
from ct_tune.facts import Problems, Roots

FILES = ("net/tcp", "net/tcp6")
#: include/net/tcp_states.h, as /proc/net/tcp prints them (%02X), and their fact names
STATES = {b"05": "fin_wait2", b"08": "close_wait"}
FACT = ("sockets",)

# one socket line: slot, local and remote address:port (8 or 32 hex digits), state
_LINE = re.compile(rb"^ *\d+: (?:[0-9A-F]{8}|[0-9A-F]{32}):[0-9A-F]{4} "
                   rb"(?:[0-9A-F]{8}|[0-9A-F]{32}):[0-9A-F]{4} ([0-9A-F]{2}) ", re.M)


def _lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """Whole lines (without their newline) of a file read in blocks; a block is split at
    its last newline, so a line never straddles two chunks handed on."""
    rest = b""
    for block in blocks:
        data = rest + block
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        yield from data[:cut].split(b"\n")
        rest = data[cut + 1:]
    if rest:
        yield rest


def count_states(lines: Iterable[bytes]) -> dict[str, int]:
    """The sockets in each state of STATES; the header is the first line.  A line that is
    not a socket line is corrupt input (ValueError naming the line), not a socket less."""
    counts = dict.fromkeys(STATES.values(), 0)
    it = iter(lines)
    header = next(it, None)
    if header is not None and not header.lstrip().startswith(b"sl "):
        raise ValueError(f"line 1: not the header of a socket table: {_show(header)}")
    for n, line in enumerate(it, start=2):
        m = _LINE.match(line)
        if m is None:
            if not line.strip():
                continue
            raise ValueError(f"line {n}: not a socket line: {_show(line)}")
        name = STATES.get(m.group(1))
        if name is not None:
            counts[name] += 1
    return counts


def _show(line: bytes) -> str:
    text = line.strip().decode("utf-8", "replace")
    return repr(text if len(text) <= 60 else text[:57] + "...")


def collect(roots: Roots, problems: Problems) -> dict[str, Any] | None:
    """{close_wait, fin_wait2, sources}: the sockets of this namespace in those states,
    IPv4 and IPv6 together, and the files read.  None when neither file exists (no
    procfs net/, an old capture) or one is corrupt, unreadable or too large (recorded in
    `problems` against the fact "sockets": a partial count would mislead)."""
    total = dict.fromkeys(STATES.values(), 0)
    sources = []
    for rel in FILES:
        path = roots.proc(rel)
        try:
            fd = safeio.open_regular(path, missing_ok=True, denied_ok=True)
            if fd is None:
                continue  # no IPv6, or no procfs net/ (an old capture)
            counts = count_states(_lines(safeio.fd_blocks(fd, path, safeio.SOCKET_TABLE)))
        except InputError as e:
            problems.add(e.path, e.problem, FACT)
            return None
        except ValueError as e:
            problems.add(path, str(e), FACT)
            return None
        sources.append(str(path))
        for name, c in counts.items():
            total[name] += c
    if not sources:
        return None
    return {**total, "sources": sources}


def kept_lines(path: Any) -> Iterator[bytes]:
    """The lines of a socket table a capture keeps: the header and the sockets in the
    states of STATES (the rest would make a busy host's tree large for nothing the
    audit reads); the same counts replay.  Corrupt lines are kept too, so the replay
    reports what the live audit did."""
    blocks = safeio.iter_blocks(path, safeio.SOCKET_TABLE, missing_ok=True, denied_ok=True)
    for n, line in enumerate(_lines(blocks)):
        m = _LINE.match(line)
        if n == 0 or m is None or m.group(1) in STATES:
            yield line + b"\n"
