"""Reading an input file as root: a regular file only, and never more than a bound.

ct-tune reads paths that others may control (a captured tree, --rules-dir, --facts,
--root).  Opening a FIFO for reading blocks until a writer comes; reading /dev/zero
never ends; opening some devices acts (a watchdog starts counting); and procfs and
sysfs report a size of 0 for files that hold data, so st_size says nothing.  Hence
every file is first opened with O_PATH, which opens no device and waits for no
writer, checked with fstat() on that descriptor, and only then reopened for reading
through /proc/self/fd (the same inode, no second path lookup an attacker could
race).  It is read up to its bound plus one byte: a longer file is refused, never
silently cut.  The bounds are documented under LIMITS in ct-tune(8).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from ct_tune.errors import InputError


class Bound(NamedTuple):
    """The most bytes a kind of file may hold, and the words an error names it by."""

    size: int
    what: str


KIB = 1 << 10
MIB = 1 << 20

#: One sysctl or sysfs value: the kernel formats it into one page (sysfs_kf_seq_show,
#: proc_sys_call_handler), and Linux pages are at most 64 KiB.
VALUE = Bound(64 * KIB, "a sysctl or sysfs value")
#: meminfo, slabinfo and net/stat/nf_conntrack (a line of about 200 bytes per possible
#: CPU: 8192 CPUs take under 2 MiB).
PROC_TABLE = Bound(4 * MIB, "a procfs table")
#: sysctl.d, sysctl.conf, modules-load.d, modprobe.d and udev rule files.
CONFIG = Bound(1 * MIB, "a configuration file")
#: A rule or profile file.
RULE = Bound(1 * MIB, "a rule or profile file")
#: A facts snapshot: every aggregate in it has a fixed size whatever the table.
SNAPSHOT = Bound(64 * MIB, "a facts snapshot")
#: rollback.json: it holds a copy of every file an apply replaced.
STATE = Bound(64 * MIB, "a rollback state file")
#: /proc/net/tcp or tcp6: about 150 bytes per socket, so some 1.7 million sockets;
#: read in blocks (ct_tune/sockets.py), never whole.
SOCKET_TABLE = Bound(256 * MIB, "a socket table")

#: The kinds of file refused, by the test that finds them.
_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
          (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"))

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_ABSENT = (errno.ENOENT, errno.ENOTDIR)
_DENIED = (errno.EACCES, errno.EPERM)


def kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def _cannot(path: str | Path, e: OSError) -> InputError:
    return InputError(str(path), f"cannot read: {e.strerror or e}")


def _tolerated(e: OSError, missing_ok: bool, denied_ok: bool) -> bool:
    """Whether the caller takes this failure as "no such input" (None), not an error."""
    return (missing_ok and e.errno in _ABSENT) or (denied_ok and e.errno in _DENIED)


def open_regular(path: str | Path, *, missing_ok: bool = False,
                 denied_ok: bool = False) -> int | None:
    """A descriptor open for reading on `path`, which must be a regular file.

    None when it does not exist (missing_ok) or may not be read (denied_ok), for the
    many inputs that are optional; anything else is an InputError naming the path.
    The descriptor is blocking again, as a reader such as dd(1) expects.
    """
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        if _tolerated(e, missing_ok, denied_ok):
            return None
        raise _cannot(path, e) from None
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(str(path), f"not a regular file ({kind(st.st_mode)})")
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", _READ_FLAGS)
        except FileNotFoundError:
            # No /proc here (a chroot): open by name, then make sure it is the same file.
            fd = os.open(path, _READ_FLAGS)
            again = os.fstat(fd)
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                raise InputError(str(path), "changed while being opened") from None
    except OSError as e:
        if _tolerated(e, missing_ok, denied_ok):
            return None
        raise _cannot(path, e) from None
    finally:
        os.close(pfd)
    os.set_blocking(fd, True)
    return fd


def read_fd(fd: int, path: str | Path, bound: Bound) -> bytes:
    """At most bound.size bytes of an open file, or an InputError saying it is larger."""
    chunks: list[bytes] = []
    left = bound.size + 1
    # os.read allocates the whole request first: start small (most inputs are a few KiB,
    # and a fleet report reads thousands), grow to 1 MiB for the large ones
    step = 1 << 16
    try:
        while left > 0:
            data = os.read(fd, min(left, step))
            if not data:
                break
            chunks.append(data)
            left -= len(data)
            step = min(step * 2, 1 << 20)
    except OSError as e:
        raise _cannot(path, e) from None
    if left <= 0:
        raise too_large(path, bound)
    return b"".join(chunks)


def iter_blocks(path: str | Path, bound: Bound, *, block: int = 1 << 20,
                missing_ok: bool = False, denied_ok: bool = False) -> Iterator[bytes]:
    """A regular file of at most bound.size bytes in blocks of up to `block` bytes, for
    files too large to hold at once (/proc/net/tcp on a busy host); nothing at all when it
    is absent (missing_ok) or denied (denied_ok)."""
    fd = open_regular(path, missing_ok=missing_ok, denied_ok=denied_ok)
    if fd is None:
        return
    yield from fd_blocks(fd, path, bound, block=block)


def fd_blocks(fd: int, path: str | Path, bound: Bound, *, block: int = 1 << 20
              ) -> Iterator[bytes]:
    """An open file (open_regular) in blocks, closed at the end.  Past the bound it
    raises, after the blocks before it: a caller that counts must drop what it counted."""
    try:
        left = bound.size + 1
        while left > 0:
            try:
                data = os.read(fd, min(left, block))
            except OSError as e:
                raise _cannot(path, e) from None
            if not data:
                return
            left -= len(data)
            if left <= 0:
                raise too_large(path, bound)
            yield data
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def read_stream(stream: BinaryIO, name: str, bound: Bound) -> bytes:
    """At most bound.size bytes of a stream (standard input, a pipe), else an InputError."""
    try:
        data = stream.read(bound.size + 1)
    except OSError as e:
        raise _cannot(name, e) from None
    if len(data) > bound.size:
        raise too_large(name, bound)
    return data


def too_large(path: str | Path, bound: Bound) -> InputError:
    return InputError(str(path), f"larger than {_size(bound.size)}, the limit for "
                                 f"{bound.what} (see LIMITS in ct-tune(8))")


def read_bytes(path: str | Path, bound: Bound, *, missing_ok: bool = False,
               denied_ok: bool = False) -> bytes | None:
    """The content of a regular file of at most bound.size bytes (see open_regular)."""
    fd = open_regular(path, missing_ok=missing_ok, denied_ok=denied_ok)
    if fd is None:
        return None
    try:
        return read_fd(fd, path, bound)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def read_text(path: str | Path, bound: Bound, *, missing_ok: bool = False,
              denied_ok: bool = False) -> str | None:
    """read_bytes decoded as UTF-8; text that is not is an InputError, not a traceback."""
    data = read_bytes(path, bound, missing_ok=missing_ok, denied_ok=denied_ok)
    return None if data is None else decode(data, path)


def decode(data: bytes, path: str | Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(str(path), "not text (invalid UTF-8)") from None


def _size(n: int) -> str:
    for unit, scale in (("MiB", MIB), ("KiB", KIB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"
