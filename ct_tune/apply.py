"""Make a plan take effect, all or nothing, and undo it.

The only module that writes to the host.  One apply is a transaction:

1. take the lock (a second apply waits briefly, then exits "busy");
2. read every file and live value it would change, fresh, under the lock;
3. save that state (rollback.json plus copies of the files) before changing
   anything, so `ct-tune rollback` can restore it;
4. write the live values, reading each back; on any failure restore every key
   already changed, in reverse order, and stop with no file touched;
5. write the files atomically (mode 0644); on failure restore the files already
   written and every live value.

Files go under ``root`` (default /), live values under the procfs root, so the
whole transaction runs against a scratch tree or inside a network namespace.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ct_tune import fragments
from ct_tune.atomic import write_atomic
from ct_tune.errors import EXIT_BUSY, EXIT_RESTORE_FAILED, CtTuneError
from ct_tune.plan import Plan

STATE_DIR = "var/lib/ct-tune"
STATE_FILE = "rollback.json"
#: the state of an apply in progress: it becomes STATE_FILE on success, is removed when a
#: failure was fully undone, and is what rollback restores after a killed apply
PENDING_FILE = "pending.json"
LOCK_FILE = "lock"
STATE_VERSION = 1


class Busy(CtTuneError):
    """Another apply or rollback holds the lock."""

    exit_code = EXIT_BUSY


class RestoreFailed(CtTuneError):
    """A change failed and the previous state could not be fully restored."""

    exit_code = EXIT_RESTORE_FAILED


@dataclass(frozen=True)
class FileChange:
    rel: str
    old: str | None
    new: str | None

    @property
    def action(self) -> str:
        if self.new is None:
            return "remove"
        return "create" if self.old is None else "replace"


@dataclass(frozen=True)
class LiveChange:
    key: str
    path: str
    old: str
    new: str


@dataclass
class Changes:
    files: list[FileChange] = field(default_factory=list)
    live: list[LiveChange] = field(default_factory=list)
    #: live keys already at the planned value / files whose settings are unchanged
    unchanged_live: list[str] = field(default_factory=list)
    unchanged_files: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.files and not self.live


def sysctl_path(procfs: Path, key: str) -> Path:
    return procfs / "sys" / key.replace(".", "/")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise CtTuneError(f"{path}: cannot read: {e.strerror or e}") from None


def _same(live: str, wanted: Any) -> bool:
    return " ".join(live.split()) == " ".join(str(wanted).split())


def changes(plan: Plan, files: dict[str, str], root: Path, procfs: Path,
            live: bool = True, persist: bool = True) -> Changes:
    """What would change: file contents (by their settings, not their comments), module
    files an earlier plan wrote and this one no longer needs, and live values that differ
    from the plan.  persist=False: live values only, no file is looked at (a non-initial
    network namespace, whose boot configuration is not under this /etc)."""
    out = Changes()
    if not persist:
        files = {}
    for rel, text in sorted(files.items()):
        old = _read_text(root / rel)
        if fragments.content(old) == fragments.content(text) and old is not None:
            out.unchanged_files.append(rel)
        else:
            out.files.append(FileChange(rel, old, text))
    for rel in fragments.MODULE_FILES if persist else ():
        old = _read_text(root / rel)
        if rel not in files and fragments.written_by_ct_tune(old):
            out.files.append(FileChange(rel, old, None))
    if live:
        for s in plan.settings:
            path = sysctl_path(procfs, s.key)
            current = _read_text(path)
            if current is None:
                raise CtTuneError(f"{path}: missing: is nf_conntrack loaded?")
            if _same(current, s.value):
                out.unchanged_live.append(s.key)
            else:
                out.live.append(LiveChange(s.key, str(path), current.strip(), str(s.value)))
    return out


def require_root(root: Path, kernel: bool) -> None:
    """Refuse before touching anything: only a scratch root, without writes to the running
    kernel, is open to an unprivileged user."""
    if os.geteuid() == 0:
        return
    if kernel or root.resolve() == Path("/"):
        raise CtTuneError("apply and rollback change /etc and /proc/sys and must run as root "
                          "(to try it unprivileged: --root SCRATCH_DIR --no-live)")


@contextlib.contextmanager
def locked(root: Path, wait: float) -> Iterator[None]:
    """flock on STATE_DIR/lock; wait up to `wait` seconds, then Busy."""
    directory = root / STATE_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise CtTuneError(f"{directory / LOCK_FILE}: cannot open the lock: "
                          f"{e.strerror or e}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(f"{directory / LOCK_FILE}: another ct-tune apply or rollback is "
                               f"running (waited {wait:g} s)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _write_live(path: str, value: str) -> None:
    """Write one sysctl and read it back: the kernel may clamp or reject silently."""
    try:
        with open(path, "w") as f:
            f.write(value + "\n")
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e)) from None
    back = Path(path).read_text()
    if not _same(back, value):
        raise OSError(errno.EIO, f"read back {back.strip()!r}, wrote {value!r}")


def _restore_live(done: list[LiveChange]) -> tuple[list[str], list[str]]:
    restored, failed = [], []
    for change in reversed(done):
        try:
            _write_live(change.path, change.old)
            restored.append(f"{change.key} = {change.old}")
        except OSError as e:
            failed.append(f"{change.key} (wanted {change.old}): {e.strerror or e}")
    return restored, failed


def _put_file(root: Path, rel: str, text: str | None) -> None:
    path = root / rel
    if text is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), mode=0o644)


def _clean_stale_temps(root: Path, files: list[FileChange]) -> None:
    """A process killed mid-write leaves only its temp file (.NAME.*.tmp, never *.conf,
    so boot never reads it); the next apply removes it."""
    for change in files:
        path = root / change.rel
        for stale in path.parent.glob(f".{path.name}.*.tmp") if path.parent.is_dir() else []:
            with contextlib.suppress(OSError):
                stale.unlink()


def netns_id(procfs: Path) -> str | None:
    """This process's network namespace ("net:[4026531840]") when writing the running
    kernel, else None.  Live values saved in one namespace must be restored in that one:
    /var/lib/ct-tune is shared with the host under 'ip netns exec'."""
    if procfs != Path("/proc"):
        return None
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def save_state(root: Path, ch: Changes, procfs: Path, version: str) -> Path:
    """The previous state, written before any change: rollback.json and file copies."""
    state = root / STATE_DIR
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = state / "backup" / stamp
    for f in ch.files:
        if f.old is not None:
            (backup / f.rel).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(backup / f.rel, f.old.encode(), mode=0o644)
    doc = {
        "version": STATE_VERSION, "tool_version": version, "saved_at": stamp,
        "procfs": str(procfs), "netns": netns_id(procfs) if ch.live else None,
        "backup": str(backup) if any(f.old for f in ch.files) else None,
        "files": [{"path": f.rel, "content": f.old} for f in ch.files],
        "live": [{"key": c.key, "path": c.path, "value": c.old} for c in ch.live],
    }
    path = state / PENDING_FILE
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)
    return path


def execute(ch: Changes, root: Path, procfs: Path, version: str, save: bool = True) -> Path | None:
    """Run the transaction (the caller holds the lock); return the state file path.
    A rollback runs the same transaction without saving a new state."""
    _clean_stale_temps(root, ch.files)
    pending = save_state(root, ch, procfs, version) if save else None
    done: list[LiveChange] = []
    for change in ch.live:
        try:
            _write_live(change.path, change.new)
        except OSError as e:
            restored, failed = _restore_live(done)
            _drop(pending, failed)
            _fail(f"{change.path}: cannot set {change.key} = {change.new}: {e.strerror or e}",
                  restored, failed, files_note="no file was changed")
        done.append(change)
    written: list[FileChange] = []
    for f in ch.files:
        try:
            _put_file(root, f.rel, f.new)
        except (OSError, CtTuneError) as e:
            undo_failed = []
            for w in reversed(written):
                try:
                    _put_file(root, w.rel, w.old)
                except (OSError, CtTuneError) as e2:
                    undo_failed.append(f"{root / w.rel}: {e2}")
            restored, failed = _restore_live(done)
            _drop(pending, failed + undo_failed)
            _fail(f"{root / f.rel}: cannot write: {e}", restored, failed + undo_failed,
                  files_note=f"{len(written)} file(s) written before it were restored"
                  if written else "no file was changed")
        written.append(f)
    if pending is None:
        return None
    final = pending.with_name(STATE_FILE)
    os.replace(pending, final)
    return final


def _drop(pending: Path | None, failed: list[str]) -> None:
    """A failure fully undone leaves the earlier rollback state as it was."""
    if pending is not None and not failed:
        with contextlib.suppress(OSError):
            pending.unlink()


def _fail(what: str, restored: list[str], failed: list[str], files_note: str) -> None:
    msg = f"{what}; restored {len(restored)} live value(s)"
    if restored:
        msg += f" ({', '.join(restored)})"
    msg += f"; {files_note}"
    if failed:
        raise RestoreFailed(msg + f"; COULD NOT RESTORE: {'; '.join(failed)}")
    raise CtTuneError(msg)


def refuse_if_interrupted(root: Path) -> None:
    """An interrupted apply's saved state is the only record of what it changed: a new
    apply must not overwrite it."""
    pending = root / STATE_DIR / PENDING_FILE
    if pending.exists():
        raise CtTuneError(f"{pending}: an earlier apply was interrupted; run 'ct-tune rollback'"
                          " first to restore what it saved (or remove the file)")


def state_path(root: Path) -> Path:
    """The state rollback restores: an interrupted apply's, else the last apply's."""
    pending = root / STATE_DIR / PENDING_FILE
    return pending if pending.exists() else root / STATE_DIR / STATE_FILE


def load_state(root: Path) -> dict[str, Any]:
    path = state_path(root)
    text = _read_text(path)
    if text is None:
        raise CtTuneError(f"{path}: no saved state: nothing to roll back")
    try:
        doc = json.loads(text)
        assert doc["version"] == STATE_VERSION
        files = [(f["path"], f["content"]) for f in doc["files"]]
        live = [LiveChange(v["key"], v["path"], "", v["value"]) for v in doc["live"]]
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CtTuneError(f"{path}: not a ct-tune rollback state (corrupt or from another "
                          "version)") from None
    return {"path": path, "files": files, "live": live, "saved_at": doc.get("saved_at"),
            "netns": doc.get("netns")}


def rollback_changes(root: Path, procfs: Path) -> Changes:
    """What a rollback would do: the saved values and files, as changes from now."""
    state = load_state(root)
    here = netns_id(procfs)
    if state["live"] and state["netns"] and here and state["netns"] != here:
        raise CtTuneError(f"{state['path']}: its live values were saved in network namespace "
                          f"{state['netns']}, this is {here}: run the rollback there "
                          "(ip netns exec NAME ct-tune rollback), or it would write them here")
    ch = Changes()
    for rel, old in state["files"]:
        now = _read_text(root / rel)
        if now != old:
            ch.files.append(FileChange(rel, now, old))
    for saved in state["live"]:
        path = sysctl_path(procfs, saved.key)
        now = _read_text(path)
        if now is None:
            raise CtTuneError(f"{path}: missing: is nf_conntrack loaded?")
        if not _same(now, saved.new):
            ch.live.append(LiveChange(saved.key, str(path), now.strip(), saved.new))
    return ch


def finish_rollback(root: Path) -> Path:
    """Retire the state once restored, so a second rollback does not run twice."""
    path = state_path(root)
    done = path.with_name(f"rolled-back-{_dt.datetime.now(_dt.UTC):%Y%m%dT%H%M%SZ}.json")
    os.replace(path, done)
    return done
