"""Findings: what a rule concluded about one host, and the overall status they add up to."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ct_tune.errors import EXIT_CRITICAL, EXIT_OK, EXIT_UNKNOWN, EXIT_WARNING

#: A finding's severity, least to most urgent.  Rules conclude ok..critical
#: (ruleset.SEVERITIES); "unknown" is the engine's: the rule's inputs were missing or
#: corrupt.  The same order is the precedence of the audit status (man ct-tune(8)):
#: a critical or warning finding still pages as such, and a host with nothing
#: wrong but an input it could not read is never "ok".
ORDER = ("ok", "info", "unknown", "warning", "critical")


@dataclass
class Finding:
    """One rule's conclusion; the JSON schema's ``findings[]`` item (see man/ct-tune-json.5)."""

    rule: str
    title: str
    severity: str
    parameter: str | None
    current: Any
    recommended: Any
    summary: str
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    rule_file: str = ""
    #: "here" when this host may set the parameter, "host" when it is read-only in this
    #: network namespace and must be set on the host (container), None without a parameter.
    scope: str | None = None
    #: severity "unknown": the missing or corrupt inputs, each "PATH: what is wrong"
    unavailable: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        """True when acting on this finding would change a value."""
        return (self.parameter is not None and self.recommended is not None
                and self.recommended != self.current)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def status(findings: list[Finding], errors: list[Any] | tuple[Any, ...] = ()) -> str:
    """critical > warning > unknown > ok, by the worst finding (info does not raise the
    status); input errors alone (facts["errors"]) make an otherwise ok audit unknown."""
    worst = max((ORDER.index(f.severity) for f in findings), default=0)
    if worst < ORDER.index("unknown") and errors:
        worst = ORDER.index("unknown")
    return {4: "critical", 3: "warning", 2: "unknown"}.get(worst, "ok")


def exit_code(status_name: str) -> int:
    """Monitoring-plugin exit status for an audit status."""
    return {"ok": EXIT_OK, "warning": EXIT_WARNING, "critical": EXIT_CRITICAL,
            "unknown": EXIT_UNKNOWN}[status_name]


def error_text(err: Mapping[str, Any]) -> str:
    """One facts["errors"] item as the CLI prints it: PATH: [FIELD: ]what is wrong."""
    item = err.get("item")
    where = f"{err['path']}: {item}" if item else err["path"]
    return one_line(f"{where}: {err['problem']}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """Control characters (a newline in a file name or a snapshot's key) escaped, so one
    problem is one line on stderr and in a table cell."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
