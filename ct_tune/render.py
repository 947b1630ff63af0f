"""Turn findings into what people and programs read: table, explanation, JSON.

Pure functions from data to text; cli.py decides where the text goes.  The
JSON layout is a documented contract (man/ct-tune-json.5, REPORT_SCHEMA_VERSION).
"""

from __future__ import annotations

import json
from typing import Any

from ct_tune.findings import Finding
from ct_tune.formulas import human_duration
from ct_tune.ruleset import SEVERITIES, Rule

REPORT_SCHEMA_VERSION = 1
_ORDER = {s: i for i, s in enumerate(SEVERITIES)}
_TIMEOUT_HINT = "_timeout"


def _fmt_value(parameter: str | None, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
        if parameter and _TIMEOUT_HINT in parameter and value >= 60:
            text += f" ({human_duration(value)})"
        return text
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def by_severity(findings: list[Finding]) -> list[Finding]:
    """Worst first, rule order kept within a severity (sorted() is stable)."""
    return sorted(findings, key=lambda f: -_ORDER[f.severity])


def table(findings: list[Finding]) -> str:
    """parameter | current | recommended | severity | why."""
    from tabulate import tabulate  # here: ~10 ms to import, and json/explain never need it

    rows = []
    for f in by_severity(findings):
        rows.append([
            f.parameter or f"({f.rule})",
            _fmt_value(f.parameter, f.current),
            _fmt_value(f.parameter, f.recommended) if f.parameter else "-",
            f.severity,
            f.summary,
        ])
    return tabulate(rows, headers=["parameter", "current", "recommended", "severity", "why"],
                    tablefmt="simple", maxcolwidths=[None, None, None, None, 70],
                    disable_numparse=True)


def explain(findings: list[Finding]) -> str:
    """Per finding: the summary, then the arithmetic and evidence behind it, then sources."""
    blocks = []
    for f in by_severity(findings):
        head = f"[{f.severity.upper()}] {f.rule}: {f.title}"
        lines = [head, "=" * len(head)]
        if f.parameter:
            change = (f"{_fmt_value(f.parameter, f.current)} -> "
                      f"{_fmt_value(f.parameter, f.recommended)}") if f.changes else (
                      f"{_fmt_value(f.parameter, f.current)} (keep)")
            lines.append(f"{f.parameter}: {change}")
            if f.scope == "host":
                lines.append("scope: read-only in this network namespace; set it on the host")
        lines += [f.summary, "", f.explanation]
        if f.evidence:
            lines += ["", "evidence:"]
            lines += [f"  {k} = {json.dumps(v)}" for k, v in f.evidence.items()]
        lines += ["", "sources:"] + [f"  - {s}" for s in f.sources]
        lines.append(f"rule file: {f.rule_file}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def report(findings: list[Finding], facts: dict[str, Any], status: str,
           profile: str) -> dict[str, Any]:
    """The --format json document (man/ct-tune-json.5)."""
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "status": status,
        "profile": profile,
        "findings": [f.to_json() for f in findings],
        "facts": facts,
    }


def rules_table(rules: list[Rule]) -> str:
    from tabulate import tabulate

    rows = [[r.id, r.max_level, r.parameter or "-", r.path] for r in rules]
    return tabulate(rows, headers=["id", "severity", "parameter", "file"], tablefmt="simple")
