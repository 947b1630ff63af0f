"""Where the conntrack table dump comes from: procfs, or ctnetlink via conntrack(8).

CONFIG_NF_CONNTRACK_PROCFS lost "default y" in 2022, so /proc/net/nf_conntrack
is often missing on new kernels.  Then the table is dumped with ``conntrack -L``
(conntrack-tools, over ctnetlink).  No shell is involved: an argument list, a
timeout, and an error that says what to install.  The source used is recorded
in the facts so a reader knows where the numbers came from.

The kernel formats /proc/net/nf_conntrack inside read(), one page at a time,
and that takes about as long as parsing the text.  A Python thread could not
overlap the two: it would need the GIL back after every page.  So dd(1) reads
the file we opened and pipes it to us, and the kernel formats the next part of
the table on the other CPU while we aggregate the last one.  dd rather than
cat: cat writes each 4 KiB page as it comes, waking us thousands of times
(about 4 % of the sample); dd with obs= gathers them into 256 KiB writes
(POSIX reblocking).  Until the sample reads the pipe, a thread of reader.py
empties it, so dd (or conntrack -L) never waits on a full pipe while ct-tune
starts.  Without dd, or with a dd that refuses ibs= and obs= (a trimmed busybox),
the file is read in this process.  Either source is read in blocks of whole
lines, decoded exactly as a text-mode file would decode it.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

from ct_tune import reader, safeio
from ct_tune.errors import CtTuneError, InputError
from ct_tune.facts import Roots

CONNTRACK_TIMEOUT = 300


class SourceError(CtTuneError):
    """The table cannot be read here (exit 3: could not assess)."""


#: Characters per block handed to the aggregator: large enough that its per-block
#: work is noise, small enough to stay a few hundred KiB whatever the table.
BLOCK_CHARS = 1 << 18


@contextmanager
def table_blocks(roots: Roots, source: str = "auto") -> Iterator[tuple[str, Iterator[str]]]:
    """Yield (source description, iterator of blocks of whole lines) for the conntrack table.

    Each block ends with a newline except perhaps the last; together they are the
    text that iterating a text-mode file (universal newlines) would give.
    source: "auto" (procfs when present, else conntrack -L), "procfs" or "conntrack".
    """
    path = roots.proc("net/nf_conntrack")
    if source == "procfs" or (source == "auto" and path.exists()):
        # The reader launch.py started on this very file, before the imports (it checked
        # the file is a regular one), or a new one.
        early = reader.take_early(str(path))
        if early is not None:
            fd, proc = early
        else:
            # A FIFO, device or directory in its place is refused before anything reads
            # it (the live file is a regular procfs file); missing or unreadable says why.
            try:
                fd = safeio.open_regular(path)
            except InputError as e:
                if e.problem.startswith("not a regular file"):
                    raise
                raise SourceError(str(e)) from None
            assert fd is not None
            proc = reader.spawn(fd)
        f = open(fd, "rb", buffering=0)  # noqa: SIM115
        with f, _procfs_text(f, path, proc) as text:
            yield str(path), _blocks(text)
        return
    if not roots.live and source == "auto":
        raise SourceError(f"{path}: not in the captured tree (capture it, or use --no-sample)")
    import shutil

    exe = shutil.which("conntrack")
    if exe is None:
        raise SourceError(f"{path}: missing (kernel built without CONFIG_NF_CONNTRACK_PROCFS) "
                          "and conntrack(8) is not installed: install conntrack-tools, or use "
                          "--no-sample")
    proc = reader.run([exe, "-L"])
    if proc is None:
        raise SourceError(f"{exe}: cannot run it")
    text = io.TextIOWrapper(proc.stream(), encoding="utf-8", errors="replace")
    try:
        yield f"{exe} -L (ctnetlink)", _blocks(text)
    finally:
        text.close()
        try:
            code, err = proc.finish(CONNTRACK_TIMEOUT)
        except TimeoutError:
            raise SourceError(f"{exe} -L: no answer in {CONNTRACK_TIMEOUT} s") from None
    # -SIGPIPE: a reader whose pipe was closed before it finished.
    if code not in (0, -signal.SIGPIPE):
        msg = err.decode(errors="replace").strip()[:200]
        raise SourceError(f"{exe} -L: exit {code}: {msg}")


@contextmanager
def _procfs_text(f: BinaryIO, path: Path, proc: reader.Reader | None) -> Iterator[TextIO]:
    """The text of the open file `f`, read by the dd(1) child `proc` when there is one
    (see the module docstring), else in this process; decoded as the text-mode open()
    did."""
    if proc is None:
        with open(f.fileno(), encoding="utf-8", errors="replace", buffering=1 << 20,
                  closefd=False) as text:
            yield _ReadErrors(text, path)
        return
    stream = proc.stream()
    if not stream.peek(1) and proc.finish()[0] != 0 and _unread(f):
        # dd failed before reading a byte: a dd without ibs= and obs= (busybox built
        # without FEATURE_DD_IBS_OBS, as some router images are) refuses them.  Read it
        # here instead, slower but whole.
        stream.close()
        with _procfs_text(f, path, None) as text:
            yield text
        return
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
    try:
        yield text
    finally:
        text.close()
        code, err = proc.finish()
    # -SIGPIPE: a reader whose pipe was closed before it finished.
    if code not in (0, -signal.SIGPIPE):
        msg = (err.decode(errors="replace").strip().splitlines() or [""])[0][:200]
        raise SourceError(f"{path}: cannot read: {msg or f'dd exit {code}'}")


def _unread(f: BinaryIO) -> bool:
    """Whether nothing was read from `f` yet (its offset, which dd shares, is 0)."""
    try:
        return os.lseek(f.fileno(), 0, os.SEEK_CUR) == 0
    except OSError:
        return False


class _ReadErrors(io.TextIOBase):
    """A text stream whose read errors are SourceErrors naming the file (the table read
    in this process, without dd: EIO from a broken procfs file is bad input, not a
    crash)."""

    def __init__(self, text: TextIO, path: Path) -> None:
        self._text, self._path = text, path

    def read(self, size: int | None = -1) -> str:
        try:
            return self._text.read(size)
        except OSError as e:
            raise SourceError(f"{self._path}: cannot read: {e.strerror or e}") from None


def _blocks(text: TextIO, size: int = BLOCK_CHARS) -> Iterator[str]:
    """Blocks of whole lines from a text stream: lines are never split between blocks.

    A line longer than MAX_LINE characters (no conntrack entry comes near it) is passed
    on cut to MAX_LINE + 1 characters, which the parsers count as one malformed line,
    and the rest of it is skipped as it arrives: memory stays bounded even when a
    "line" never ends (a stream of NULs), and no character is searched twice.
    """
    # Imported here, once the reader runs: compiling the parsers' patterns (about 9 ms)
    # would otherwise delay starting dd, and the kernel's printing with it.
    from ct_tune.flowparse import MAX_LINE

    pending = ""
    head: str | None = None  # the start of an over-long line whose end is being skipped
    blank = True             # ... and whether it is all whitespace so far
    while chunk := text.read(size):
        if head is not None:
            nl = chunk.find("\n")
            rest = chunk if nl < 0 else chunk[:nl]
            if blank and rest and not rest.isspace():
                blank = False
            if nl < 0:
                continue
            yield from _cut(head, blank, MAX_LINE)
            head = None
            chunk = chunk[nl + 1:]
        if pending:
            chunk = pending + chunk
        cut = chunk.rfind("\n") + 1
        pending = chunk[cut:]
        if cut:
            yield chunk[:cut]
        if len(pending) > MAX_LINE:
            # blank or not is decided on all of it: the part past the cut is dropped
            blank = pending.isspace()
            head, pending = pending[:MAX_LINE + 1], ""
    if head is not None:
        yield from _cut(head, blank, MAX_LINE)
    if pending:
        yield pending


def _cut(head: str, blank: bool, max_line: int) -> Iterator[str]:
    """The stand-in for an over-long line: an empty line for a blank one (not an entry,
    but still a line: a large table is parsed from every k-th line, counted the same
    way whichever reader gave them), else max_line + 1 characters that are not all
    whitespace."""
    if blank:
        yield "\n"
        return
    yield (head if not head.isspace() else head[:max_line] + "\ufffd") + "\n"


def conntrack_stats(exe: str) -> dict:
    """`conntrack -S` in the shape of parse_conntrack_stat (whichever form this conntrack
    prints: parsers.parse_conntrack_cli_stat); output it cannot read is a SourceError."""
    from ct_tune import parsers

    out = _run([exe, "-S"])
    try:
        stat = parsers.parse_conntrack_cli_stat(out)
    except ValueError as e:
        raise SourceError(f"{exe} -S: {e}") from None
    source = f"{exe} -S (ctnetlink)"
    if stat["first_cpu_only"]:
        source = f"{exe} -S (old conntrack-tools: the first CPU's counters only)"
    return {"source": source, **stat}


def _run(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceError(f"{cmd[0]}: {e}") from None
    if proc.returncode != 0:
        raise SourceError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()[:200]}")
    return proc.stdout
