"""Where compiled rule expressions are kept between runs, and whether that place is safe.

Compiling the rules' Jinja2 expressions costs more than everything else an audit does,
so each compiled expression is kept in a bytecode cache, keyed by its source.  The
cache holds code that runs as whoever runs ct-tune (often root): it is used only from a
directory that this user owns, that nobody else can write to, and whose every parent is
as safe (a sticky /tmp counts).  Anything else, or any error reading or writing it,
means compiling again: the cache can only make a run faster, never change what it finds
or make it fail.

The directory is opened once, walking from / one component at a time and checking each
directory on the descriptor it was opened as; every entry is then read and written
relative to that descriptor.  A path is never resolved again after the check, so
swapping a directory or a symlink on the way after the check changes nothing.

    CT_TUNE_CACHE_DIR=<dir>   use that directory
    CT_TUNE_CACHE_DIR=off     (or empty) no cache
    default                   /var/cache/ct-tune as root, else $XDG_CACHE_HOME/ct-tune
                              or ~/.cache/ct-tune
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jinja2.bccache import Bucket, BytecodeCache

ENV_VAR = "CT_TUNE_CACHE_DIR"
ROOT_DIR = Path("/var/cache/ct-tune")
PATTERN = "expr-%s.cache"
# An entry is a few KiB of marshalled code; anything much larger was not written by us.
MAX_ENTRY = 1 << 20
# As the kernel's own limit on symlinks followed in one lookup (MAXSYMLINKS).
_MAX_LINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def _private(st: os.stat_result, euid: int) -> bool:
    """Owned by this user and writable by nobody else (the cache directory, an entry)."""
    return st.st_uid == euid and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class _Unsafe(Exception):
    """Some component of the path is not safe (or not there): no cache."""


def _open_child(parent: int, name: str, euid: int, last: bool, create: bool) -> int:
    """Open directory name under the descriptor parent (never through a symlink),
    creating it when asked; checked on the new descriptor before it is returned."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
        # created relative to a parent already checked: nobody else can put it there
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700 if last else 0o755, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    st = os.fstat(fd)
    if not (_private(st, euid) if last else not _writable_by_others(st, euid)):
        os.close(fd)
        raise _Unsafe(name)
    return fd


def open_directory(path: Path, euid: int | None = None, create: bool = False) -> int | None:
    """A descriptor of the cache directory path when it is safe, else None.

    Walks from / component by component with O_NOFOLLOW: each directory is checked on
    the descriptor it was opened as (owned by root or this user, not writable by others
    unless sticky; the last one owned by this user and writable by nobody else).  An
    intermediate symlink is followed only when root or this user owns it, since its
    directory is already known safe and so nobody else could have put it there; the
    last component must be a real directory.  With create, missing directories are
    made (the last one 0700) relative to their checked parent.
    """
    euid = os.geteuid() if euid is None else euid
    todo = [p for p in reversed(Path(os.path.abspath(os.fspath(path))).parts[1:])]
    links = 0
    try:
        fd = os.open("/", _DIR_FLAGS)
    except OSError:
        return None
    try:
        if _writable_by_others(os.fstat(fd), euid):
            raise _Unsafe("/")
        while todo:
            name = todo.pop()
            last = not todo
            try:
                child = _open_child(fd, name, euid, last, create)
            except OSError as e:
                # O_NOFOLLOW on a symlink: ELOOP; O_DIRECTORY on one: ENOTDIR
                if last or e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                links += 1
                if (not stat.S_ISLNK(st.st_mode) or st.st_uid not in (0, euid)
                        or links > _MAX_LINKS):
                    raise _Unsafe(name) from e
                target = os.readlink(name, dir_fd=fd)
                todo.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
                if target.startswith("/"):
                    child = os.open("/", _DIR_FLAGS)
                    if _writable_by_others(os.fstat(child), euid):
                        os.close(child)
                        raise _Unsafe("/") from e
                else:
                    child = os.dup(fd)
            os.close(fd)
            fd = child
        return fd
    except (OSError, _Unsafe):
        os.close(fd)
        return None


def is_safe(path: Path, euid: int | None = None) -> bool:
    """True when only this user (and root) could have put files in path.

    The directory itself must be a real directory (not a symlink) owned by this user
    and writable by nobody else; each parent must be owned by root or this user and
    not writable by others unless sticky, so nobody can swap the directory out.
    """
    fd = open_directory(path, euid)
    if fd is None:
        return False
    os.close(fd)
    return True


def _bytecode_cache_class() -> type[BytecodeCache]:
    from jinja2.bccache import BytecodeCache

    class DirectoryCache(BytecodeCache):
        """Jinja2's file-system bytecode cache (same file names and format), except that
        every entry is opened relative to the directory's descriptor, without following
        symlinks, and read only when it is a regular file this user owns and nobody else
        can write."""

        def __init__(self, fd: int, euid: int) -> None:
            self.fd = fd
            self.euid = euid

        def load_bytecode(self, bucket: Bucket) -> None:
            name = PATTERN % bucket.key
            try:
                f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                            dir_fd=self.fd)
            except OSError:
                return  # missing, a symlink, unreadable: compile
            try:
                st = os.fstat(f)
                if (not stat.S_ISREG(st.st_mode) or not _private(st, self.euid)
                        or st.st_size > MAX_ENTRY):
                    return
                data = os.read(f, MAX_ENTRY + 1)
            finally:
                os.close(f)
            if len(data) <= MAX_ENTRY:
                bucket.load_bytecode(io.BytesIO(data))

        def dump_bytecode(self, bucket: Bucket) -> None:
            name = PATTERN % bucket.key
            tmp = f"{name}.{os.urandom(8).hex()}.tmp"
            buf = io.BytesIO()
            bucket.write_bytecode(buf)
            f = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                        | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
            try:
                with os.fdopen(f, "wb", closefd=True) as out:
                    out.write(buf.getvalue())
                os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=self.fd)
                raise

    return DirectoryCache


@functools.cache
def bytecode_cache() -> BytecodeCache | None:
    """The process's Jinja2 bytecode cache, or None (off, unsafe or unusable)."""
    path = directory()
    if path is None:
        return None
    euid = os.geteuid()
    fd = open_directory(path, euid, create=True)
    if fd is None:
        return None
    return _bytecode_cache_class()(fd, euid)
