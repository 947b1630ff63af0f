"""Findings: what a rule concluded about one host, and the overall status they add up to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ct_tune.errors import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING
from ct_tune.ruleset import SEVERITIES


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

    @property
    def changes(self) -> bool:
        """True when acting on this finding would change a value."""
        return (self.parameter is not None and self.recommended is not None
                and self.recommended != self.current)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def status(findings: list[Finding]) -> str:
    """ok | warning | critical, by the worst finding (info does not raise the status)."""
    worst = max((SEVERITIES.index(f.severity) for f in findings), default=0)
    return {3: "critical", 2: "warning"}.get(worst, "ok")


def exit_code(status_name: str) -> int:
    """Monitoring-plugin exit status for an audit status."""
    return {"ok": EXIT_OK, "warning": EXIT_WARNING, "critical": EXIT_CRITICAL}[status_name]
