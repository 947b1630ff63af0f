"""Errors a user can act on, and the exit codes they map to.

Every failure caused by input (a corrupt /proc value, a malformed rule or facts
file) is raised as an InputError carrying the file and what is wrong, so the CLI
can print one line and exit with a documented status instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ct_tune.oneline import one_line

# Exit status, monitoring-plugin convention (Nagios/Icinga): see man/ct-tune.8.
EXIT_OK = 0
EXIT_WARNING = 1
EXIT_CRITICAL = 2
EXIT_UNKNOWN = 3
# apply / rollback only
EXIT_BUSY = 4            # another apply or rollback holds the lock
EXIT_RESTORE_FAILED = 5  # a change failed AND the previous state could not be fully restored


class CtTuneError(Exception):
    """Base for errors that end a command with one message and an exit status."""

    exit_code = EXIT_UNKNOWN
    #: what kind of failure, for machine-readable output (apply --format json's
    #: error.reason, which the Ansible modules map): see man ct-tune-json(5)
    reason = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class InputError(CtTuneError):
    """A file the tool read is wrong: ``PATH: [ID: ]problem``."""

    reason = "bad-input"

    def __init__(self, path: str, problem: str, item: str | None = None) -> None:
        self.path = str(path)
        self.item = item
        self.problem = problem
        # one line whatever the file name, id or quoted content holds
        prefix = f"{one_line(self.path)}: {one_line(item)}: " if item else \
            f"{one_line(self.path)}: "
        super().__init__(prefix + one_line(problem))


class InputErrors(InputError):
    """Several input problems found in one pass: each is reported, one
    ``PATH: [ID: ]problem`` line each, so an admin fixes them all in one round instead
    of one per run.  path, item and problem are the first one's, for callers that catch
    InputError; the CLI prints every line of the message with its own prefix."""

    def __init__(self, errors: Iterable[InputError]) -> None:
        self.errors = [e for err in errors for e in flatten(err)]
        first = self.errors[0]
        self.path, self.item, self.problem = first.path, first.item, first.problem
        CtTuneError.__init__(self, "\n".join(e.message for e in self.errors))


def raise_all(errors: list[InputError]) -> None:
    """Raise the errors collected (one as itself, several as InputErrors), if any."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise InputErrors(errors)


def flatten(error: CtTuneError) -> list[InputError]:
    """The single errors inside an InputError or InputErrors."""
    if isinstance(error, InputErrors):
        return list(error.errors)
    return [error] if isinstance(error, InputError) else []


def collect(*loaders: Callable[[], Any]) -> list[Any]:
    """Run every loader and return their results, or raise every InputError they raised
    together (rules and profiles are loaded separately but reported in one run)."""
    results, errors = [], []
    for load in loaders:
        try:
            results.append(load())
        except InputError as e:
            errors.extend(flatten(e))
    raise_all(errors)
    return results
