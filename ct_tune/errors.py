"""Errors a user can act on, and the exit codes they map to.

Every failure caused by input (a corrupt /proc value, a malformed rule or facts
file) is raised as an InputError carrying the file and what is wrong, so the CLI
can print one line and exit with a documented status instead of a traceback.
"""

from __future__ import annotations

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

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(CtTuneError):
    """A file the tool read is wrong: ``PATH: [ID: ]problem``."""

    def __init__(self, path: str, problem: str, item: str | None = None) -> None:
        self.path = str(path)
        self.item = item
        self.problem = problem
        prefix = f"{self.path}: {item}: " if item else f"{self.path}: "
        super().__init__(prefix + problem)


class InputErrors(InputError):
    """Several input problems found in one pass: one ``ct-tune: PATH: problem`` line each.

    The CLI prints ``ct-tune: {error}``, so every line after the first carries the
    prefix in the message itself.  path, item and problem are the first one's.
    """

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        first = errors[0]
        self.path, self.item, self.problem = first.path, first.item, first.problem
        CtTuneError.__init__(self, "\nct-tune: ".join(e.message for e in errors))
