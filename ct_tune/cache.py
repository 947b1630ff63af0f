"""Where compiled rule expressions are kept between runs, and whether that place is safe.

Compiling the rules' Jinja2 expressions costs more than everything else an audit does,
so each compiled expression is kept with Jinja2's own bytecode cache, keyed by its
source.  The cache holds code that runs as whoever runs ct-tune (often root): it is
used only from a directory that this user owns, that nobody else can write to, and
whose every parent is as safe (a sticky /tmp counts).  Anything else, or any error
reading or writing it, means compiling again: the cache can only make a run faster,
never change what it finds or make it fail.

    CT_TUNE_CACHE_DIR=<dir>   use that directory
    CT_TUNE_CACHE_DIR=off     (or empty) no cache
    default                   /var/cache/ct-tune as root, else $XDG_CACHE_HOME/ct-tune
                              or ~/.cache/ct-tune
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jinja2.bccache import BytecodeCache

ENV_VAR = "CT_TUNE_CACHE_DIR"
ROOT_DIR = Path("/var/cache/ct-tune")


def directory(environ: dict[str, str] | os._Environ = os.environ,
              euid: int | None = None) -> Path | None:
    """The cache directory this user would use, or None when caching is off."""
    euid = os.geteuid() if euid is None else euid
    chosen = environ.get(ENV_VAR)
    if chosen is not None:
        return None if chosen.strip() in ("", "off") else Path(chosen)
    if euid == 0:
        return ROOT_DIR
    xdg = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "ct-tune"
    home = environ.get("HOME", "")
    return Path(home) / ".cache" / "ct-tune" if os.path.isabs(home) else None


def _writable_by_others(st: os.stat_result, euid: int) -> bool:
    if st.st_uid not in (0, euid):
        return True
    sticky = bool(st.st_mode & stat.S_ISVTX)
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) and not sticky


def is_safe(path: Path, euid: int | None = None) -> bool:
    """True when only this user (and root) could have put files in path.

    The directory itself must be a real directory (not a symlink) owned by this user
    and writable by nobody else; each parent must be owned by root or this user and
    not writable by others unless sticky, so nobody can swap the directory out.
    """
    euid = os.geteuid() if euid is None else euid
    try:
        st = os.lstat(path)
        if (not stat.S_ISDIR(st.st_mode) or st.st_uid != euid
                or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            return False
        return not any(_writable_by_others(os.stat(parent), euid)
                       for parent in path.absolute().parents)
    except OSError:
        return False


def _prepare(path: Path) -> bool:
    """Create the directory (0700) when missing; whether it is safe to use."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return False
    return is_safe(path)


@functools.cache
def bytecode_cache() -> BytecodeCache | None:
    """The process's Jinja2 bytecode cache, or None (off, unsafe or unusable)."""
    path = directory()
    if path is None or not _prepare(path):
        return None
    from jinja2 import FileSystemBytecodeCache

    return FileSystemBytecodeCache(str(path), pattern="expr-%s.cache")
