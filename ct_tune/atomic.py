"""Crash-safe file replacement: a reader sees the old file or the new one, never a part.

Temp file in the same directory (so rename is atomic on one filesystem), fsync
the data, rename over the target, then fsync the directory so the rename itself
survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from ct_tune.errors import InputError


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644, into_special: bool = False
                 ) -> None:
    """Replace path with data atomically, leaving it with the given mode.

    A target that is not a regular file (/dev/null, a FIFO, /dev/stdout, or a link to
    one, such as a sysctl.d mask) is never replaced: renaming over it would destroy a
    device node.  With `into_special` the data is written into it (``collect -o
    /dev/stdout``); otherwise it is an error naming the file."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not into_special:
            raise InputError(str(path), "not a regular file (a device, FIFO or a link to "
                             "one, e.g. a mask to /dev/null): not replacing it")
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise InputError(str(path), f"cannot write: {e.strerror or e}") from None
        return
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise InputError(str(path), f"cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InputError(str(path), f"cannot write: {e.strerror or e}") from None
