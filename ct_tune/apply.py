"""Make a plan take effect, all or nothing, and undo it.

The only module that writes to the host.  One apply is a transaction:

1. take the lock (a second apply waits briefly, then exits "busy");
2. read every file and live value it would change, fresh, under the lock;
3. save that state (rollback.json plus copies of the files) before changing
   anything, so `ct-tune rollback` can restore it;
4. write the live values, reading each back; on any failure (a mismatch too: the
   value was changed) restore every key already changed, in reverse order, and stop
   with no file touched;
5. write the files atomically (mode 0644); on failure restore the files already
   written and every live value.

Files go under ``root`` (default /), live values under the procfs root, so the
whole transaction runs against a scratch tree or inside a network namespace.
Both are reached only through directory descriptors that never follow a link below
the root (see atomic), so neither a link in a scratch tree nor a hostile state file
can direct a write anywhere else.  A state file is validated as a whole before
anything is restored: only the files ct-tune writes, only conntrack keys, only
integers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ct_tune import atomic, fragments, sysctlkeys
from ct_tune.errors import EXIT_BUSY, EXIT_RESTORE_FAILED, CtTuneError, InputError
from ct_tune.plan import Plan

STATE_DIR = "var/lib/ct-tune"
STATE_FILE = "rollback.json"
#: the state of an apply in progress: it becomes STATE_FILE on success, is removed when a
#: failure was fully undone, and is what rollback restores after a killed apply
PENDING_FILE = "pending.json"
LOCK_FILE = "lock"
STATE_VERSION = 1
#: bounds on what is read back: a fragment is a few KB, a state a few files' worth
MAX_FILE = 1 << 20
MAX_STATE = 8 << 20
MAX_LIVE = 4096
MAX_STATE_ENTRIES = 256

#: a value as the kernel prints it: decimal without leading zeros (proc_dointvec parses
#: with base 0, so "060" would set 48 and "0x3c" 60)
_VALUE = re.compile(r"-?(0|[1-9][0-9]{0,19})")
_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,250}\.conf")


class Busy(CtTuneError):
    """Another apply or rollback holds the lock."""

    exit_code = EXIT_BUSY
    reason = "busy"


class RestoreFailed(CtTuneError):
    """A change failed and the previous state could not be fully restored."""

    exit_code = EXIT_RESTORE_FAILED
    reason = "restore-failed"


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


def valid_key(key: Any) -> bool:
    """The netfilter conntrack sysctls and the legacy alias of nf_conntrack_max."""
    return isinstance(key, str) and sysctlkeys.WRITABLE_KEY.fullmatch(key) is not None


def valid_value(value: Any) -> bool:
    return isinstance(value, str) and _VALUE.fullmatch(value) is not None


def valid_name(name: str) -> bool:
    """A sysctl.d fragment name: one plain, visible path component ending in .conf."""
    return _NAME.fullmatch(name) is not None


def writable_files(name: str) -> set[str]:
    """Every file ct-tune writes under the root for fragment `name`."""
    return {f"{fragments.SYSCTL_DIR}/{name}", *fragments.MODULE_FILES}


def sysctl_path(procfs: Path, key: str) -> Path:
    return procfs / "sys" / key.replace(".", "/")


def _split(rel: str) -> tuple[str, str]:
    directory, _, name = rel.rpartition("/")
    return directory, name


def read_file(root: Path, rel: str) -> str | None:
    """A file ct-tune writes, as it is now (None if missing); a link there is refused."""
    directory, name = _split(rel)
    with atomic.directory(root, directory) as fd:
        if fd is None:
            return None
        data = atomic.read_at(fd, name, root / rel, MAX_FILE)
    # surrogateescape: whatever bytes an admin left are restored byte for byte
    return None if data is None else data.decode("utf-8", "surrogateescape")


def put_file(root: Path, rel: str, text: str | None) -> None:
    """Replace (or remove, for None) root/rel; a link or special file there is refused."""
    directory, name = _split(rel)
    with atomic.directory(root, directory, create=text is not None) as fd:
        if fd is None:
            return
        kind = atomic.kind_at(fd, name, root / rel)
        if kind == "link":
            raise atomic.link_refused(root / rel)
        if kind == "other":
            raise InputError(str(root / rel), "not a regular file: not replacing it")
        if text is None:
            atomic.remove_at(fd, name, root / rel)
        else:
            atomic.replace_at(fd, name, text.encode("utf-8", "surrogateescape"), root / rel)


def clean_temps(root: Path, rels: Iterable[str]) -> None:
    """A process killed mid-write leaves only its temp file (.NAME.*.tmp, never *.conf,
    so boot never reads it); the next apply or rollback removes it."""
    for rel in sorted(set(rels)):
        directory, name = _split(rel)
        with atomic.directory(root, directory) as fd:
            if fd is not None:
                atomic.clean_temps_at(fd, name)


def read_live(procfs: Path, key: str) -> str | None:
    directory, name = _split(str(sysctl_path(Path(""), key)))
    with atomic.directory(procfs, directory) as fd:
        if fd is None:
            return None
        data = atomic.read_at(fd, name, sysctl_path(procfs, key), MAX_LIVE)
    return None if data is None else data.decode(errors="replace")


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
        old = read_file(root, rel)
        if fragments.content(old) == fragments.content(text) and old is not None:
            out.unchanged_files.append(rel)
        else:
            out.files.append(FileChange(rel, old, text))
    for rel in fragments.MODULE_FILES if persist else ():
        old = read_file(root, rel)
        if rel not in files and fragments.written_by_ct_tune(old):
            out.files.append(FileChange(rel, old, None))
    if live:
        for s in plan.settings:
            path = sysctl_path(procfs, s.key)
            if not valid_key(s.key):
                raise CtTuneError(f"{s.key}: not a conntrack key: ct-tune writes only "
                                  "net.netfilter.nf_conntrack_* and net.nf_conntrack_max")
            if not valid_value(str(s.value)):
                raise CtTuneError(f"{s.key}: planned value {str(s.value)!r} is not a "
                                  "decimal integer: not writing it")
            current = read_live(procfs, s.key)
            if current is None:
                raise CtTuneError(f"{path}: missing: is nf_conntrack loaded?",
                                  reason="not-loaded")
            if not valid_value(current.strip()):
                raise InputError(str(path), f"expected an integer, found {current.strip()!r}")
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
                          "(to try it unprivileged: --root SCRATCH_DIR --no-live)",
                          reason="not-root")


@contextlib.contextmanager
def locked(root: Path, wait: float) -> Iterator[None]:
    """flock on STATE_DIR/lock; wait up to `wait` seconds, then Busy."""
    path = root / STATE_DIR / LOCK_FILE
    with atomic.directory(root, STATE_DIR, create=True) as dfd:
        try:
            fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise atomic.link_refused(path) from None
            raise CtTuneError(f"{path}: cannot open the lock: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(str(path), "not a regular file: cannot be the lock")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(f"{path}: another ct-tune apply or rollback is "
                               f"running (waited {wait:g} s)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


class _LiveError(Exception):
    """A live write that failed; `changed` when the value may have been changed anyway
    (it was accepted but reads back otherwise), so it must be restored too."""

    def __init__(self, why: str, changed: bool) -> None:
        super().__init__(why)
        self.why = why
        self.changed = changed


def _write_live(procfs: Path, key: str, value: str) -> None:
    """Write one sysctl and read it back: the kernel may clamp or reject silently."""
    directory, name = _split(str(sysctl_path(Path(""), key)))
    try:
        with atomic.directory(procfs, directory) as dfd:
            if dfd is None or atomic.kind_at(dfd, name) is None:
                raise _LiveError("missing", changed=False)
            if atomic.kind_at(dfd, name) != "file":
                raise _LiveError("not a regular file (a link, FIFO or device)", changed=False)

            def opener(path: str, flags: int) -> int:
                flags = (flags & ~os.O_CREAT) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                return os.open(path, flags, dir_fd=dfd)

            try:
                with open(name, "w", opener=opener) as f:
                    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                        raise _LiveError("not a regular file", changed=False)
                    f.write(value + "\n")
            except OSError as e:
                raise _LiveError(e.strerror or str(e), changed=False) from None
            try:
                data = atomic.read_at(dfd, name, sysctl_path(procfs, key), MAX_LIVE)
            except CtTuneError as e:
                raise _LiveError(f"cannot read it back: {e}", changed=True) from None
    except CtTuneError as e:
        raise _LiveError(str(e), changed=False) from None
    back = (data or b"").decode(errors="replace")
    if not _same(back, value):
        raise _LiveError(f"read back {back.strip()!r}, wrote {value!r}", changed=True)


def _restore_live(procfs: Path, done: list[LiveChange]) -> tuple[list[str], list[str]]:
    restored, failed = [], []
    for change in reversed(done):
        try:
            _write_live(procfs, change.key, change.old)
            restored.append(f"{change.key} = {change.old}")
        except _LiveError as e:
            failed.append(f"{change.key} (wanted {change.old}): {e.why}")
    return restored, failed


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
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = f"{STATE_DIR}/backup/{stamp}"
    for f in ch.files:
        if f.old is not None:
            directory, name = _split(f"{backup}/{f.rel}")
            with atomic.directory(root, directory, create=True) as fd:
                assert fd is not None
                atomic.replace_at(fd, name, f.old.encode("utf-8", "surrogateescape"),
                                  root / backup / f.rel)
    doc = {
        "version": STATE_VERSION, "tool_version": version, "saved_at": stamp,
        "procfs": os.path.abspath(procfs), "netns": netns_id(procfs) if ch.live else None,
        "backup": str(root / backup) if any(f.old for f in ch.files) else None,
        "files": [{"path": f.rel, "content": f.old} for f in ch.files],
        "live": [{"key": c.key, "value": c.old} for c in ch.live],
    }
    with atomic.directory(root, STATE_DIR, create=True) as fd:
        assert fd is not None
        atomic.replace_at(fd, PENDING_FILE, (json.dumps(doc, indent=2) + "\n").encode(),
                          root / STATE_DIR / PENDING_FILE, mode=0o600)
    return root / STATE_DIR / PENDING_FILE


def execute(ch: Changes, root: Path, procfs: Path, version: str, save: bool = True,
            temps: Iterable[str] = ()) -> Path | None:
    """Run the transaction (the caller holds the lock); return the state file path.
    A rollback runs the same transaction without saving a new state.  `temps` names
    further files whose stale temporary files are removed first."""
    clean_temps(root, [*temps, *(f.rel for f in ch.files),
                       *(f"{STATE_DIR}/{name}" for name in (PENDING_FILE, STATE_FILE))])
    pending = save_state(root, ch, procfs, version) if save else None
    done: list[LiveChange] = []
    for change in ch.live:
        try:
            _write_live(procfs, change.key, change.new)
        except _LiveError as e:
            if e.changed:  # accepted but not as written: it is changed all the same
                done.append(change)
            restored, failed = _restore_live(procfs, done)
            _drop(root, pending, failed)
            _fail(f"{change.path}: cannot set {change.key} = {change.new}: {e.why}",
                  restored, failed, files_note="no file was changed")
        done.append(change)
    written: list[FileChange] = []
    for f in ch.files:
        try:
            put_file(root, f.rel, f.new)
        except CtTuneError as e:
            _undo(root, procfs, pending, written, done, f"{root / f.rel}: cannot write: {e}")
        written.append(f)
    if pending is None:
        return None
    try:
        with atomic.directory(root, STATE_DIR) as fd:
            os.rename(PENDING_FILE, STATE_FILE, src_dir_fd=fd, dst_dir_fd=fd)
            os.fsync(fd)
    except (OSError, CtTuneError) as e:
        why = e.strerror if isinstance(e, OSError) else str(e)
        _undo(root, procfs, pending, written, done,
              f"{pending}: cannot rename it to {STATE_FILE}: {why}")
    return root / STATE_DIR / STATE_FILE


def _undo(root: Path, procfs: Path, pending: Path | None, written: list[FileChange],
          done: list[LiveChange], what: str) -> None:
    """Put back the files already written and every live value, then fail."""
    undo_failed = []
    for w in reversed(written):
        try:
            put_file(root, w.rel, w.old)
        except CtTuneError as e2:
            undo_failed.append(str(e2))
    restored, failed = _restore_live(procfs, done)
    _drop(root, pending, failed + undo_failed)
    _fail(what, restored, failed + undo_failed,
          files_note=f"{len(written)} file(s) written before it were restored"
          if written else "no file was changed")


def _drop(root: Path, pending: Path | None, failed: list[str]) -> None:
    """A failure fully undone leaves the earlier rollback state as it was."""
    if pending is not None and not failed:
        with contextlib.suppress(CtTuneError), atomic.directory(root, STATE_DIR) as fd:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(PENDING_FILE, dir_fd=fd)


def _fail(what: str, restored: list[str], failed: list[str], files_note: str) -> None:
    msg = f"{what}; restored {len(restored)} live value(s)"
    if restored:
        msg += f" ({', '.join(restored)})"
    msg += f"; {files_note}"
    if failed:
        raise RestoreFailed(msg + f"; COULD NOT RESTORE: {'; '.join(failed)}")
    raise CtTuneError(msg)


def _state_entry(root: Path, name: str) -> str | None:
    with atomic.directory(root, STATE_DIR) as fd:
        return None if fd is None else atomic.kind_at(fd, name, root / STATE_DIR / name)


def refuse_if_interrupted(root: Path) -> None:
    """An interrupted apply's saved state is the only record of what it changed: a new
    apply must not overwrite it."""
    if _state_entry(root, PENDING_FILE) is not None:
        raise CtTuneError(f"{root / STATE_DIR / PENDING_FILE}: an earlier apply was "
                          "interrupted; run 'ct-tune rollback' first to restore what it "
                          "saved (or remove the file)", reason="interrupted")


def state_path(root: Path) -> Path:
    """The state rollback restores: an interrupted apply's, else the last apply's."""
    name = PENDING_FILE if _state_entry(root, PENDING_FILE) is not None else STATE_FILE
    return root / STATE_DIR / name


@dataclass(frozen=True)
class State:
    path: Path
    procfs: Path
    files: list[tuple[str, str | None]]
    live: list[tuple[str, str]]
    saved_at: str | None
    #: the network namespace the live values were saved in (None: not recorded)
    netns: str | None = None


def _typename(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def validate_state(doc: Any) -> tuple[list[str], dict[str, Any]]:
    """Every problem of a parsed state document (none means it is safe to restore), and
    its contents.  Pure: paths and keys are checked against what ct-tune writes, so
    nothing a state names can lead a rollback anywhere else."""
    problems: list[str] = []
    out: dict[str, Any] = {"files": [], "live": [], "procfs": None, "saved_at": None,
                           "netns": None}
    if not isinstance(doc, dict):
        return [f"expected a JSON object, found {_typename(doc)}"], out
    version = doc.get("version")
    if type(version) is not int or version != STATE_VERSION:
        problems.append(f"version: expected {STATE_VERSION}, found {json.dumps(version)[:40]}")
    procfs = doc.get("procfs")
    if not isinstance(procfs, str) or not procfs.startswith("/") or "\0" in procfs:
        problems.append(f"procfs: expected an absolute path, found {json.dumps(procfs)[:60]}")
    else:
        out["procfs"] = Path(procfs)
    if isinstance(doc.get("saved_at"), str):
        out["saved_at"] = doc["saved_at"]
    netns = doc.get("netns")
    if netns is not None and not (isinstance(netns, str) and len(netns) < 64):
        problems.append(f"netns: expected a namespace id or null, found {json.dumps(netns)[:60]}")
    else:
        out["netns"] = netns
    for section in ("files", "live"):
        entries = doc.get(section)
        if not isinstance(entries, list):
            problems.append(f"{section}: expected an array, found {_typename(entries)}")
            continue
        if len(entries) > MAX_STATE_ENTRIES:
            problems.append(f"{section}: {len(entries)} entries, more than ct-tune writes")
            continue
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            where = f"{section}[{i}]"
            if not isinstance(entry, dict):
                problems.append(f"{where}: expected an object, found {_typename(entry)}")
                continue
            if section == "files":
                rel, content = entry.get("path"), entry.get("content", ...)
                directory, name = _split(rel) if isinstance(rel, str) else ("", "")
                if not (rel in fragments.MODULE_FILES or (
                        directory == fragments.SYSCTL_DIR and valid_name(name))):
                    problems.append(f"{where}.path: {json.dumps(rel)[:80]} is not a file "
                                    "ct-tune writes")
                    continue
                if content is ...:
                    problems.append(f"{where}.content: missing")
                    continue
                if content is not None and not isinstance(content, str):
                    problems.append(f"{where}.content: expected a string or null, found "
                                    f"{_typename(content)}")
                    continue
                if content is not None:
                    try:
                        content.encode("utf-8", "surrogateescape")
                    except UnicodeEncodeError:
                        problems.append(f"{where}.content: not text ct-tune read")
                        continue
                ident = rel
                out["files"].append((rel, content))
            else:
                key, value = entry.get("key"), entry.get("value")
                if not valid_key(key):
                    problems.append(f"{where}.key: {json.dumps(key)[:80]} is not a conntrack "
                                    "key ct-tune writes")
                    continue
                if not valid_value(value):
                    found = json.dumps(value)[:40] if "value" in entry else "nothing"
                    problems.append(f"{where}.value: expected a decimal integer as a string, "
                                    f"found {found}")
                    continue
                path = entry.get("path")  # older states: only ever the key's own file
                if path is not None and (not isinstance(path, str) or out["procfs"] is None
                                         or path != str(sysctl_path(out["procfs"], key))):
                    problems.append(f"{where}.path: {json.dumps(path)[:80]} is not the file "
                                    f"of {key} under the recorded procfs")
                    continue
                ident = key
                out["live"].append((key, value))
            if ident in seen:
                problems.append(f"{where}: {ident} is named twice")
            seen.add(ident)
    return problems, out


def load_state(root: Path) -> State:
    path = state_path(root)
    with atomic.directory(root, STATE_DIR) as fd:
        data = None if fd is None else atomic.read_at(fd, path.name, path, MAX_STATE)
    if data is None:
        raise CtTuneError(f"{path}: no saved state: nothing to roll back", reason="no-state")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(str(path), f"not a ct-tune rollback state: not JSON "
                         f"({str(e).splitlines()[0][:80]}); nothing was restored") from None
    problems, out = validate_state(doc)
    if problems:
        shown = problems[:20] + ([f"and {len(problems) - 20} more"] if len(problems) > 20
                                 else [])
        raise InputError(str(path), "not a valid ct-tune rollback state, nothing was "
                         f"restored: {'; '.join(shown)}")
    return State(path, out["procfs"], out["files"], out["live"], out["saved_at"],
                 out["netns"])


def rollback_procfs(state: State, given: str | None) -> Path:
    """The procfs the apply wrote its live values under; an explicit --procfs must name
    the same directory (a rollback must never write a different kernel's values)."""
    if given is None or not state.live:
        return state.procfs if given is None else Path(given)
    if os.path.realpath(given) != os.path.realpath(state.procfs):
        raise CtTuneError(f"{state.path}: the apply wrote its live values under "
                          f"{state.procfs}, not --procfs {given}: nothing was restored "
                          "(omit --procfs to use the recorded one)")
    return state.procfs


def rollback_changes(root: Path, state: State, procfs: Path) -> Changes:
    """What a rollback would do: the saved values and files, as changes from now."""
    here = netns_id(procfs)
    if state.live and state.netns and here and state.netns != here:
        raise CtTuneError(f"{state.path}: its live values were saved in network namespace "
                          f"{state.netns}, this is {here}: run the rollback there "
                          "(ip netns exec NAME ct-tune rollback), or it would write them here",
                          reason="namespace")
    ch = Changes()
    for rel, old in state.files:
        now = read_file(root, rel)
        if now != old:
            ch.files.append(FileChange(rel, now, old))
    for key, value in state.live:
        path = sysctl_path(procfs, key)
        now = read_live(procfs, key)
        if now is None:
            raise CtTuneError(f"{path}: missing: is nf_conntrack loaded?")
        if not _same(now, value):
            if not valid_value(now.strip()):
                raise InputError(str(path), f"expected an integer, found {now.strip()!r}")
            ch.live.append(LiveChange(key, str(path), now.strip(), value))
    return ch


def finish_rollback(root: Path, state: State) -> Path:
    """Retire the state once restored, so a second rollback does not run twice."""
    done = f"rolled-back-{_dt.datetime.now(_dt.UTC):%Y%m%dT%H%M%SZ}.json"
    with atomic.directory(root, STATE_DIR) as fd:
        try:
            os.rename(state.path.name, done, src_dir_fd=fd, dst_dir_fd=fd)
            os.fsync(fd)
        except OSError as e:
            raise CtTuneError(f"{state.path}: restored, but cannot retire it: "
                              f"{e.strerror or e}") from None
    return root / STATE_DIR / done
