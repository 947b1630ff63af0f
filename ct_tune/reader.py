"""The dd(1) child that reads the table dump into a pipe, and the one started early.

The kernel formats /proc/net/nf_conntrack inside read(), and on a large table that
takes as long as everything else a sample does.  dd reads the file and pipes it to
us, so the kernel prints on one CPU while we parse on the other (ctsource explains
why dd, and its block sizes).  This module is kept to os, stat, fcntl and subprocess
(not even typing) so that launch.py can start the reader before click and ct-tune's
other modules are imported: about 50 ms of start-up during which the kernel would
otherwise sit idle.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess

#: The reader process, looked up on PATH by the exec itself
READER = "dd"
PIPE_BYTES = 1 << 20
PIPE_WRITE = 1 << 18   # dd's write size: a block per wakeup, and little left to parse at EOF

#: (path, descriptor, reader) of the reader start_early started and nothing took yet
_early: tuple[str, int, subprocess.Popen] | None = None


def spawn(fd: int) -> subprocess.Popen | None:
    """dd reading the open file `fd` into a pipe (its stdout), or None without dd."""
    try:
        proc = subprocess.Popen([READER, "ibs=65536", f"obs={PIPE_WRITE}"], stdin=fd,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError:  # no dd on PATH
        return None
    assert proc.stdout is not None
    grow_pipe(proc.stdout)
    return proc


def grow_pipe(stream: io.IOBase) -> None:
    """Let the writer run up to PIPE_BYTES ahead of us (Linux F_SETPIPE_SZ; best effort)."""
    import fcntl

    with contextlib.suppress(OSError, AttributeError):  # an older kernel, or not Linux
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def start_early(path: str) -> bool:
    """Start the reader on `path` now, for take_early to hand over; False (and nothing
    started) unless `path` is a regular file that opens and dd runs.  Every failure is
    left for the regular path to meet again and report."""
    global _early
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        os.set_blocking(fd, True)
        proc = spawn(fd)
        if proc is None:
            raise OSError("no reader")
    except OSError:
        os.close(fd)
        return False
    _early = (path, fd, proc)
    return True


def take_early(path: str) -> tuple[int, subprocess.Popen] | None:
    """The descriptor and reader start_early started on `path`, now the caller's to close;
    None if none was (a reader started on another path is stopped: unread, it only
    cost the kernel's work)."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    started, fd, proc = early
    if started == path:
        return fd, proc
    _stop(fd, proc)
    return None


def _stop(fd: int, proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate()
    os.close(fd)
