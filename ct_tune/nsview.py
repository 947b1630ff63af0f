"""The other network namespaces' conntrack tables, as seen through the procfs root.

nf_conntrack_max is one global value but the kernel checks it against each namespace's
own count (nf_conntrack_core.c __nf_conntrack_alloc: the namespace's count, net->ct.count,
later struct nf_conntrack_net's, against the global nf_conntrack_max), and each namespace
has its own /proc/net/stat/nf_conntrack.  A container whose table is full drops packets
while the host's own count is low: the host sees it only by reading the container's
counters, which /proc/PID/net/stat/nf_conntrack gives for any process in it (/proc/PID/net
is that task's namespace's view; /proc/sys is always the reader's own).

Bounded: at most MAX_PIDS process directories and MAX_NAMESPACES namespaces are read, each
file through safeio's bound; a process that exits mid-scan or a file root may not read is
skipped.  Namespaces without a process (an `ip netns add` with nothing running) cannot be
read this way and are not listed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ct_tune import parsers, safeio

#: process directories read at most (a fleet host runs thousands of processes)
MAX_PIDS = 32768
#: distinct namespaces read at most; the busiest KEEP are kept in the facts
MAX_NAMESPACES = 512
KEEP = 16
#: where iproute2 names namespaces (ip-netns(8)), read only for the live host
NETNS_DIR = Path("/run/netns")
COUNTERS = ("drop", "early_drop", "insert_failed")


def _link(path: Path | str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _names(netns_dir: Path | None) -> dict[str, list[str]]:
    """iproute2 names by 'net:[INODE]' (bind mounts of the namespace files)."""
    out: dict[str, list[str]] = {}
    if netns_dir is None:
        return out
    try:
        entries = sorted(os.scandir(netns_dir), key=lambda e: e.name)[:MAX_NAMESPACES]
    except OSError:
        return out
    for entry in entries:
        try:
            ino = entry.stat().st_ino
        except OSError:
            continue
        out.setdefault(f"net:[{ino}]", []).append(entry.name)
    return out


def scan(procfs: Path, netns_dir: Path | None = NETNS_DIR) -> dict[str, Any] | None:
    """Every other network namespace a process of procfs is in: its entries and drop
    counters, busiest first.  None when procfs has no /proc/self/ns/net (a captured tree,
    or a kernel without namespaces)."""
    own = _link(procfs / "self/ns/net")
    if own is None:
        return None
    names = _names(netns_dir)
    found: dict[str, dict[str, Any]] = {}
    pids = 0
    truncated = False
    try:
        listing = os.scandir(procfs)
    except OSError:
        return None
    with listing:
        for entry in listing:
            if not entry.name.isdigit():
                continue
            pids += 1
            if pids > MAX_PIDS:
                truncated = True
                break
            # a string path: one readlink per process on the host
            link = _link(f"{entry.path}/ns/net")
            if link is None or link == own or link in found:
                continue
            if len(found) >= MAX_NAMESPACES:
                truncated = True
                continue
            path = procfs / entry.name / "net/stat/nf_conntrack"
            try:
                text = safeio.read_text(path, safeio.PROC_TABLE, missing_ok=True,
                                        denied_ok=True)
                parsed = parsers.parse_conntrack_stat(text) if text else None
            except (ValueError, safeio.InputError):
                parsed = None
            if parsed is None:
                continue
            found[link] = {
                "netns": link, "pid": int(entry.name), "names": names.get(link, []),
                "source": str(path), "entries": parsed["entries"],
                **{k: parsed["counters"].get(k, 0) for k in COUNTERS},
            }
    busiest = sorted(found.values(), key=lambda n: (-n["entries"], -n["drop"], n["netns"]))
    return {"own": own, "pids": min(pids, MAX_PIDS), "seen": len(found),
            "truncated": truncated, "list": busiest[:KEEP]}
