"""The child that reads the table dump into a pipe (dd(1), or conntrack -L), and the
dd started early.

The kernel formats /proc/net/nf_conntrack inside read(), and on a large table that
takes as long as everything else a sample does.  dd reads the file and pipes it to
us, so the kernel prints on one CPU while we parse on the other (ctsource explains
why dd, and its block sizes).  This module is kept to os, stat, fcntl and the
interpreter's built-in _signal (not subprocess, not even typing; threading only once
dd runs) so that launch.py can start the reader before click and ct-tune's other
modules are imported: about 50 ms of start-up during which the kernel would otherwise
sit idle.

A thread empties the pipe until the sample starts reading it.  A pipe holds 1 MiB,
which the kernel prints in about 20 ms, and ct-tune's imports and facts take 70 ms
before the first entry is parsed: without the thread dd would block on the full pipe
for the difference, and the kernel's printing with it, every millisecond of it added
to the sample (strace showed dd's fifth write waiting 69 ms).  A larger pipe is no
cure: with 4 MiB the whole dump ran 7 % slower here (its pages, we think, no longer
stay in the cache between dd's write and our read).  The thread holds at most PREFETCH_BYTES
and stops as soon as the sample reads for itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat

#: The reader process, looked up on PATH by the exec itself
READER = "dd"
PIPE_BYTES = 1 << 20
PIPE_WRITE = 1 << 18   # dd's write size: a block per wakeup, and little left to parse at EOF
#: At most this much of the dump is held in memory, read ahead of the sample; past it dd
#: waits, as it would without the thread.  About 70 ms of printing at 60 MB/s is 4 MiB.
PREFETCH_BYTES = 1 << 23

#: (path, descriptor, reader) of the reader start_early started and nothing took yet
_early: tuple[str, int, Reader] | None = None


class Reader:
    """A child (dd on one open file, or conntrack -L) writing the dump into a pipe, and the
    thread reading that pipe ahead.

    stream() is the dump as a binary stream; finish() stops what is left and says how
    the child ended.  The thread only ever reads the pipe while the stream has not been read;
    once it has, the stream reads the pipe itself."""

    def __init__(self, pid: int, out: int, err: int) -> None:
        import threading

        self.pid = pid
        self._out, self._err = out, err
        self._chunks: list[bytes] = []  # read ahead, oldest first
        self._pos = 0                   # of the first chunk, bytes already taken
        self._held = 0                  # bytes in _chunks
        self._taken = False             # the stream has started: the thread stops
        self._ahead = True              # the thread may still add to _chunks
        self._eof = False               # the end of the dump was read
        self._cond = threading.Condition()
        self.returncode: int | None = None
        self._stderr_text = b""
        self._thread = threading.Thread(target=self._fill, name="ct-tune-prefetch",
                                        daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        """Read the pipe ahead until the stream is read, the dump ends or PREFETCH_BYTES
        are held (then wait for the stream, which takes them)."""
        try:
            while True:
                with self._cond:
                    while self._held >= PREFETCH_BYTES and not self._taken:
                        self._cond.wait()
                    if self._taken:
                        return
                data = os.read(self._out, PIPE_BYTES)  # the GIL is released meanwhile
                with self._cond:
                    if not data:
                        self._eof = True
                        return
                    self._chunks.append(data)
                    self._held += len(data)
                    self._cond.notify_all()
        except OSError:
            return  # the stream reads the pipe itself and meets the error there
        finally:
            with self._cond:
                self._ahead = False
                self._cond.notify_all()

    def readinto(self, buf: memoryview) -> int:
        """The next bytes of the dump into buf: first what the thread read ahead, then the
        pipe itself (0 at the end)."""
        with self._cond:
            if not self._taken:
                self._taken = True
                self._cond.notify_all()
            while not self._chunks and self._ahead:
                self._cond.wait()
            if self._chunks:
                chunk = self._chunks[0]
                n = min(len(buf), len(chunk) - self._pos)
                buf[:n] = memoryview(chunk)[self._pos:self._pos + n]
                self._pos += n
                if self._pos == len(chunk):
                    self._chunks.pop(0)
                    self._pos = 0
                self._held -= n
                return n
            if self._eof:
                return 0
        n = os.readv(self._out, [buf])
        if n == 0:
            self._eof = True
        return n

    def stream(self) -> io.BufferedReader:
        """The dump, as a buffered binary stream (for io.TextIOWrapper)."""
        return io.BufferedReader(_Raw(self), PIPE_WRITE)

    def finish(self, timeout: float | None = None) -> tuple[int, bytes]:
        """Stop the reader if it still runs (the stream was left before the end), wait for
        it and close the pipes; (its exit status as subprocess gives it, its stderr).
        A reader that ended its output but not itself within `timeout` seconds is killed
        and TimeoutError raised.  Idempotent."""
        if self.returncode is not None:
            return self.returncode, self._stderr_text
        with self._cond:
            self._taken = True
            self._cond.notify_all()
        stopped = not self._eof
        if stopped:  # it may be blocked on a full pipe: it is not needed any more
            self._kill()
        self._thread.join()
        err, ended = self._stderr(timeout)
        os.close(self._out)
        os.close(self._err)
        if not ended:
            self._kill()
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            raise TimeoutError(f"still running {timeout} s after its output ended")
        self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        if stopped and self.returncode == -9:
            self.returncode = 0  # killed by us, not a failure
        self._stderr_text = err
        return self.returncode, err

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)  # SIGKILL

    def _stderr(self, timeout: float | None) -> tuple[bytes, bool]:
        """The reader's stderr (its first 64 KiB) up to its end, which comes when the
        reader exits; and whether it came within `timeout` seconds (None: no limit)."""
        import select
        import time

        poller = select.poll()
        poller.register(self._err, select.POLLIN)
        end = None if timeout is None else time.monotonic() + timeout
        err = b""
        while True:
            left = -1 if end is None else max(0, round((end - time.monotonic()) * 1000))
            if not poller.poll(left):
                return err, False
            try:
                part = os.read(self._err, 1 << 16)
            except OSError:
                return err, True
            if not part:
                return err, True
            if len(err) < 1 << 16:
                err += part


class _Raw(io.RawIOBase):
    """A Reader as the raw stream under io.BufferedReader."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:
        return self._reader.readinto(memoryview(buf).cast("B"))


def _above_stdio(fd: int) -> int:
    """fd itself, or a copy of it numbered 3 or more: dup2 onto 0, 1 or 2 in the child would
    otherwise be a no-op that leaves close-on-exec set (ct-tune started with stdio
    closed)."""
    if fd > 2:
        return fd
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def spawn(fd: int) -> Reader | None:
    """dd reading the open file `fd` into a pipe (read ahead by a thread), or None
    without dd.  `fd` stays the caller's."""
    return run([READER, "ibs=65536", f"obs={PIPE_WRITE}"], fd)


def run(argv: list[str], stdin: int | None = None) -> Reader | None:
    """argv (looked up on PATH) with `stdin` as its standard input (else ours) and its
    standard output read ahead, or None when it cannot be run.  `stdin` stays the
    caller's."""
    from _signal import SIGPIPE  # (signal would import enum: milliseconds before dd)

    src = None if stdin is None else stdin if stdin > 2 else _above_stdio(os.dup(stdin))
    out_r, out_w = (_above_stdio(x) for x in os.pipe())
    err_r, err_w = (_above_stdio(x) for x in os.pipe())
    actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    if src is not None:
        actions.insert(0, (os.POSIX_SPAWN_DUP2, src, 0))
    try:
        pid = os.posix_spawnp(
            argv[0], argv, os.environ, file_actions=actions,
            # Python ignores SIGPIPE; a reader stopped early must die of it, not report EPIPE
            setsigdef=(SIGPIPE,))
    except OSError:  # not on PATH, not executable
        for x in (out_r, err_r):
            os.close(x)
        return None
    finally:
        for x in (out_w, err_w) + ((src,) if src not in (None, stdin) else ()):
            os.close(x)
    _grow_pipe(out_r)
    return Reader(pid, out_r, err_r)


def _grow_pipe(fd: int) -> None:
    """Let the writer run up to PIPE_BYTES ahead of us (Linux F_SETPIPE_SZ; best effort)."""
    import fcntl

    with contextlib.suppress(OSError, AttributeError):  # an older kernel, or not Linux
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


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


def take_early(path: str) -> tuple[int, Reader] | None:
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
    proc.finish()
    os.close(fd)
    return None
