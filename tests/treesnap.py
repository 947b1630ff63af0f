"""Byte-for-byte pictures of directory trees, links included, to prove what changed."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def snapshot(top: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every entry below top, never following a link: a link by its target, a file by its
    bytes and mode, a directory by its mode.  Entries under a `skip` prefix are left out."""
    out: dict[str, tuple] = {}
    if not top.exists():
        return out
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(top))
            if rel.startswith(skip) and skip:
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode))
    return out
