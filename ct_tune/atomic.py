"""Crash-safe file replacement, confined to a directory tree.

A reader sees the old file or the new one, never a part: temp file in the same
directory (so rename is atomic on one filesystem), fsync the data, rename over
the target, then fsync the directory so the rename itself survives a power cut.

apply and rollback run as root against a ``--root`` that may be a scratch tree
someone else can write.  A path re-resolved by name could then be redirected by a
symlink (etc/sysctl.d -> /etc/sysctl.d) to the host's own files.  So everything
under a root is reached through directory descriptors: the root is opened once,
each component below it with O_NOFOLLOW | O_DIRECTORY, and the file operations
(create, read, rename, unlink) are made relative to the last descriptor.  A
symlink anywhere below the root, even one that stays inside it, is refused:
ct-tune's files and directories are its own, and a link where one is expected
means someone else decided where the write goes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from ct_tune import safeio
from ct_tune.errors import InputError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def link_refused(path: Path | str) -> InputError:
    return InputError(str(path), "is a symbolic link: ct-tune does not follow links where it "
                      "writes (one could lead outside the root); remove it or replace it "
                      "with the real directory or file")


def _components(rel: str) -> list[str]:
    """The components of a path relative to a root; never '..', '.', empty or absolute."""
    parts = rel.split("/") if rel else []
    if rel.startswith("/") or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise ValueError(f"not a plain relative path: {rel!r}")
    return parts


def open_root(root: Path) -> int:
    """The root itself is the caller's choice and may be reached through links."""
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(str(root), f"cannot open the directory: {_why(e)}") from None


def _open_child(fd: int, name: str, path: Path, create: bool) -> int | None:
    """One component below fd, never through a link; None if missing and not created."""
    for _ in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass  # made meanwhile: open it (a link made meanwhile is refused below)
            except OSError as e:
                raise InputError(str(path), f"cannot create the directory: {_why(e)}"
                                 ) from None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    st = None
                if st is not None and stat.S_ISLNK(st.st_mode):
                    raise link_refused(path) from None
                if not create:
                    return None  # nothing below a file: read as missing
                raise InputError(str(path), "not a directory") from None
            raise InputError(str(path), f"cannot open the directory: {_why(e)}") from None
    raise InputError(str(path), "cannot open the directory: it keeps changing")


@contextlib.contextmanager
def directory(root: Path, rel: str, create: bool = False) -> Iterator[int | None]:
    """A descriptor of root/rel reached without following any link below root (None when
    a component is missing and `create` is false).  Closed on exit."""
    if create:
        try:
            os.makedirs(root, exist_ok=True)  # the root is the caller's choice, links and all
        except OSError as e:
            raise InputError(str(root), f"cannot create the directory: {_why(e)}") from None
    elif not os.path.isdir(root):
        yield None  # nothing below a missing root
        return
    fd: int | None = open_root(root)
    here = root
    try:
        for name in _components(rel):
            here = here / name
            assert fd is not None
            child = _open_child(fd, name, here, create)
            os.close(fd)
            fd = child
            if fd is None:
                break
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def read_at(fd: int, name: str, path: Path | str, limit: int) -> bytes | None:
    """A regular file's bytes (None if missing), never through a link or from a FIFO or
    device (opened non-blocking, checked on the descriptor), at most `limit` bytes."""
    try:
        # O_PATH first: opening a device for reading may act (a watchdog), a FIFO waits
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(str(path), f"cannot read: {_why(e)}") from None
    try:
        mode = os.fstat(pfd).st_mode
        if stat.S_ISLNK(mode):
            raise link_refused(path)
        if not stat.S_ISREG(mode):
            raise InputError(str(path), f"not a regular file ({safeio.kind(mode)})")
        f = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(str(path), f"cannot read: {_why(e)}") from None
    finally:
        os.close(pfd)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(f, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise InputError(str(path), f"larger than {limit} bytes: not a file ct-tune wrote")
        return b"".join(chunks)
    except OSError as e:
        raise InputError(str(path), f"cannot read: {_why(e)}") from None
    finally:
        os.close(f)


def kind_at(fd: int, name: str, path: Path | str | None = None) -> str | None:
    """'file', 'link', 'other' or None (missing), without following a link."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(str(path or name), f"cannot examine it: {_why(e)}") from None
    if stat.S_ISLNK(st.st_mode):
        return "link"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def replace_at(fd: int, name: str, data: bytes, path: Path | str, mode: int = 0o644) -> None:
    """Replace the entry `name` of directory fd atomically.  Only the entry is replaced:
    the rename never writes through a link that stands there."""
    for _ in range(100):
        # os.urandom as secrets.token_hex does, without importing secrets (hashlib,
        # random, base64: about 10 ms of every 'collect -o' start-up)
        tmp = f".{name}.{os.urandom(4).hex()}.tmp"
        try:
            f = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                        | os.O_CLOEXEC, 0o600, dir_fd=fd)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise InputError(str(path), f"cannot write: {_why(e)}") from None
    else:
        raise InputError(str(path), "cannot write: no free temporary file name")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(f, view):]
            os.fchmod(f, mode)
            os.fsync(f)
        finally:
            os.close(f)
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=fd)
        raise InputError(str(path), f"cannot write: {_why(e)}") from None


def remove_at(fd: int, name: str, path: Path | str) -> None:
    """Remove the entry (a link itself, never what it points to); missing is fine."""
    try:
        os.unlink(name, dir_fd=fd)
        os.fsync(fd)
    except FileNotFoundError:
        return
    except OSError as e:
        raise InputError(str(path), f"cannot remove: {_why(e)}") from None


def temp_pattern(name: str) -> re.Pattern[str]:
    """The temporary files replace_at (and older versions, through mkstemp) leave beside
    `name` when killed: .NAME.XXXXXXXX.tmp, never *.conf, so boot never reads them."""
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{1,64}}\.tmp")


def clean_temps_at(fd: int, name: str) -> list[str]:
    """Remove the temporary files a killed write left beside `name`; returns their names."""
    pattern = temp_pattern(name)
    gone = []
    try:
        entries = os.listdir(fd)
    except OSError:
        return gone
    for entry in entries:
        if pattern.fullmatch(entry):
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=fd)
                gone.append(entry)
    return gone


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
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(str(path), f"cannot write: {_why(e)}") from None
    try:
        replace_at(fd, path.name, data, path, mode)
    finally:
        os.close(fd)
