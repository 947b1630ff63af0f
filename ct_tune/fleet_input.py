"""Reading a fleet's snapshots and auditing each: the I/O half of the fleet report.

Every snapshot goes through snapshot.load (the safeio bounds of ``audit --facts``: a
regular file of at most 64 MiB, validated against the facts schema), and the rules,
loaded and compiled once by the caller, run on each through the engine, in forked
worker processes when there are many.  A snapshot that cannot be read or validated is a
``fleet.Skipped`` with every problem, never the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from ct_tune import engine, fleet, snapshot
from ct_tune.errors import InputError, flatten
from ct_tune.findings import error_text, one_line, status
from ct_tune.profiles import Profile
from ct_tune.ruleset import Rule

SUFFIX = ".json"


def expand(args: Iterable[str]) -> Iterator[str | fleet.Skipped]:
    """Each argument, a directory replaced by its *.json files (sorted, not recursive);
    a directory that cannot be listed or holds none is a Skipped saying so."""
    for arg in args:
        if not os.path.isdir(arg):
            yield arg
            continue
        try:
            names = sorted(n for n in os.listdir(arg) if n.endswith(SUFFIX))
        except OSError as e:
            yield fleet.Skipped(arg, (one_line(f"{arg}: cannot list: {e.strerror or e}"),))
            continue
        if not names:
            yield fleet.Skipped(arg, (one_line(f"{arg}: no *{SUFFIX} snapshots in this "
                                               "directory"),))
        yield from (os.path.join(arg, n) for n in names)


def audit_one(path: str, rules: Sequence[Rule], profile: Profile
              ) -> tuple[fleet.Host | fleet.Skipped, list[str]]:
    """One snapshot's host line, or why it was skipped; plus the problems its facts
    record (read as unknown, as by audit --facts), one line each."""
    try:
        facts = snapshot.load(path)
    except InputError as e:
        return fleet.Skipped(path, tuple(err.message for err in flatten(e))), []
    errors = facts.get("errors") or []
    try:
        result = engine.evaluate(rules, facts, profile, explain=False)
    except InputError as e:  # a rule that fails on these facts: this host only
        return fleet.Skipped(path, tuple(f"{path}: audit failed: {err.message}"
                                         for err in flatten(e))), []
    problems = [error_text(err) for err in errors]
    return fleet.host(path, facts, result, status(result, errors)), problems


#: (rules, profile) for the worker processes: set before they fork, so they inherit
#: the compiled rules instead of loading or pickling them
_SHARED: tuple[Sequence[Rule], Profile] | None = None
#: below this many snapshots per process, starting processes costs more than it saves
_PER_JOB = 64
_CHUNK = 16


def _audit_chunk(paths: list[str]) -> list[tuple[fleet.Host | fleet.Skipped, list[str]]]:
    assert _SHARED is not None
    rules, profile = _SHARED
    return [audit_one(p, rules, profile) for p in paths]


def audit_all(args: Iterable[str], rules: Sequence[Rule], profile: Profile, jobs: int = 1
              ) -> Iterator[tuple[fleet.Host | fleet.Skipped, list[str]]]:
    """audit_one of every snapshot the arguments name, in order.

    jobs > 1: in that many forked processes, when there are
    enough snapshots to make it worth it; the results come back in input order.
    """
    global _SHARED
    items = list(expand(args))
    paths = [i for i in items if isinstance(i, str)]
    jobs = max(1, min(jobs, len(paths) // _PER_JOB))
    if jobs == 1:
        for item in items:
            yield (item, []) if isinstance(item, fleet.Skipped) else \
                audit_one(item, rules, profile)
        return
    import multiprocessing

    _SHARED = (rules, profile)
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            done = iter(r for chunk in pool.imap(_audit_chunk, chunks) for r in chunk)
            for item in items:
                yield (item, []) if isinstance(item, fleet.Skipped) else next(done)
    finally:
        _SHARED = None
