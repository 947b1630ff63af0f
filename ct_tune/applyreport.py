"""apply and rollback as one JSON document (``--format json``), for programs that drive them.

Pure: the changes, skips and outcome in, a dict out.  Configuration management (the
Ansible collection under ansible_collections/ct_tune/conntrack) reads it instead of
the text output: ``changed`` is true only when something changed (or, in a dry run,
would change), so a second run reports false; each file carries its content before and
after and their digests (Ansible's diff mode), each live value its value before and
after; a failure is ``error.reason``, a word a program can map (busy, not-root,
read-only, ...).  The schema is documented in man ct-tune-json(5), APPLY REPORT.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path
from typing import Any

from ct_tune.errors import EXIT_UNKNOWN, CtTuneError

SCHEMA = "ct-tune/apply"
SCHEMA_VERSION = 1

#: OSErrors behind a failed write that mean "this cannot be written here" (a read-only
#: mount, /proc/sys in a container, a sysctl owned by another user namespace)
_READ_ONLY = {errno.EROFS: "read-only", errno.EACCES: "read-only", errno.EPERM: "read-only"}


def digest(text: str | None) -> str | None:
    """sha256 of a file's bytes as ct-tune writes them (None: the file does not exist)."""
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _abs(root: Path, rel: str) -> str:
    return f"{str(root).rstrip('/')}/{rel}"


def report(ch: Any, *, command: str, dry_run: bool, root: Path, procfs: Path,
           settings: Any = (), skips: Any = (), notes: Any = (), warnings: Any = (),
           persist: bool = True, live: bool = True, profile: str | None = None,
           state_file: Path | None = None, restored_from: Path | None = None,
           errors: Any = ()) -> dict[str, Any]:
    """The document for one apply or rollback run that got as far as its changes.

    ``settings`` (apply) gives the planned value of the live keys already as planned;
    ``state_file`` is where the previous state was saved (apply) or kept (rollback)."""
    planned = {s.key: str(s.value) for s in settings}
    files = [{"path": _abs(root, f.rel), "action": f.action, "before": f.old,
              "after": f.new, "before_sha256": digest(f.old), "after_sha256": digest(f.new)}
             for f in ch.files]
    files += [{"path": _abs(root, rel), "action": "unchanged", "before": None, "after": None,
               "before_sha256": None, "after_sha256": None}
              for rel in ch.unchanged_files]
    live_values = [{"key": c.key, "path": c.path, "before": c.old, "after": c.new,
                    "changed": True} for c in ch.live]
    live_values += [{"key": k, "path": str(procfs / "sys" / k.replace(".", "/")),
                     "before": planned.get(k), "after": planned.get(k),
                     "changed": False} for k in ch.unchanged_live]
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "dry_run": dry_run,
        "changed": not ch.empty,
        "root": str(root),
        "procfs": str(procfs),
        "profile": profile,
        "persist": persist,
        "live": live,
        "files": files,
        "live_values": live_values,
        "skipped": [{"key": s.key, "current": s.current, "recommended": s.recommended,
                     "kind": s.kind, "reason": s.reason} for s in skips],
        "notes": list(notes),
        "warnings": list(warnings),
        "state_file": str(state_file) if state_file is not None else None,
        "restored_from": str(restored_from) if restored_from is not None else None,
        "input_errors": list(errors),
        "error": None,
    }


def reason(e: BaseException) -> str:
    """What kind of failure e is: its own reason, or read-only when an OSError behind it
    (kept as its __context__ even when raised ``from None``) says the target is."""
    own = getattr(e, "reason", "error")
    if own not in ("error", "bad-input"):
        return own
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _READ_ONLY:
            return _READ_ONLY[cur.errno]
        cur = cur.__cause__ or cur.__context__
    return own


def failure(e: CtTuneError, *, command: str, dry_run: bool, root: Path,
            procfs: Path | None, exit_code: int, partial: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """The document for a run that failed: nothing changed (exit 3 and 4) unless the
    restore failed too (exit 5, error.reason restore-failed).  ``partial``: the report
    of what the run had planned, when it got that far."""
    doc = dict(partial) if partial else {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "command": command,
        "dry_run": dry_run, "root": str(root),
        "procfs": str(procfs) if procfs is not None else None, "files": [],
        "live_values": [], "skipped": [], "notes": [], "warnings": [], "state_file": None,
        "restored_from": None, "input_errors": []}
    kind = reason(e)
    doc["changed"] = kind == "restore-failed"
    doc["error"] = {"reason": kind, "message": str(e), "exit_code": exit_code}
    return doc


def unreadable(errors: Any, dry_run: bool, root: Path, procfs: Path) -> dict[str, Any]:
    """The document for an apply that stopped because the host could not be read whole
    (each problem is on stderr too): nothing was changed, exit 3."""
    from ct_tune.findings import error_text

    doc = failure(CtTuneError("the host could not be read whole: nothing was changed",
                              reason="bad-input"), command="apply", dry_run=dry_run,
                  root=root, procfs=procfs, exit_code=EXIT_UNKNOWN)
    doc["input_errors"] = [error_text(e) for e in errors]
    return doc
