"""The HTML reports: one self-contained page per audit or fleet, for a ticket or a mail.

Assembles the page from the JSON report (render.report, or the fleet report) and the
charts (charts.py); the markup is in templates/*.html.j2, rendered with autoescaping,
so every string from the input (a hostname, a rule's text, a class name) is escaped.
The page loads nothing: inline CSS, inline SVG, no script, no font, no image file.

pygal, which draws the charts, is the optional extra ``report``: :func:`require` says
how to install it before any work is done.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from ct_tune import __version__
from ct_tune.errors import CtTuneError
from ct_tune.findings import ORDER

EXTRA = "report"
_RANK = {s: i for i, s in enumerate(ORDER)}
_TIMEOUT_HINT = "_timeout"
#: idle-time charts drawn, largest classes first (the others are listed by name)
IDLE_CHARTS = 8


class MissingExtra(CtTuneError):
    """--format html without pygal installed."""


def require() -> None:
    """Fail early, with the install command, when the charting library is missing."""
    try:
        import pygal  # noqa: F401
    except ImportError:
        raise MissingExtra(
            "--format html: the charting library pygal is not installed; install the "
            f"'{EXTRA}' extra: pip install 'ct-tune[{EXTRA}]'") from None


def _env() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("ct_tune", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters["value"] = fmt_value
    env.filters["evidence"] = fmt_evidence
    env.filters["bytes"] = fmt_bytes
    env.filters["num"] = lambda v: "-" if v is None else f"{v:,}"
    return env


def fmt_bytes(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "unknown"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{int(value):,} B"


def _duration(seconds: int) -> str:
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2]) or "0 s"


def fmt_value(value: Any, parameter: str | None = None) -> str:
    """A parameter's value as the table shows it: thousands separated, timeouts with
    their duration, unknown as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        text = f"{value:,}"
        if parameter and _TIMEOUT_HINT in parameter and value >= 60:
            text += f" ({_duration(value)})"
        return text
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return " ".join(fmt_value(v) for v in value)
    return str(value)


def fmt_evidence(value: Any) -> str:
    """An evidence value: numbers readable, no raw floats, unknown for null."""
    if value is None:
        return "unknown"
    if isinstance(value, (dict, list)) and not (
            isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value)):
        return json.dumps(value, sort_keys=True, default=str)
    return fmt_value(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _sysctl(facts: Mapping[str, Any], key: str) -> Any:
    entry = (facts.get("sysctl") or {}).get(key)
    return entry.get("value") if isinstance(entry, Mapping) else None


def _by_severity(findings: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(findings, key=lambda f: -_RANK.get(f.get("severity"), 0))


def _draw(draw: Any, *args: Any) -> str | None:
    """One chart; values no chart can show (a hand-edited snapshot: 1e300 seconds, counts
    beyond any table) leave the sentence instead of failing the report."""
    try:
        return draw(*args)
    except (ArithmeticError, ValueError, TypeError):
        return None


def _chart(svg: str | None, missing: str) -> dict[str, Any]:
    """A chart for the template: its SVG, or the sentence that stands in for it."""
    from markupsafe import Markup

    return {"svg": Markup(svg), "missing": None} if svg else {"svg": None, "missing": missing}


def _audit_charts(report: Mapping[str, Any], warn_pct: float, crit_pct: float
                  ) -> dict[str, Any]:
    """Each chart's SVG, or the sentence that stands in for it."""
    from markupsafe import Markup

    from ct_tune import charts

    facts = report.get("facts") or {}
    findings = report.get("findings") or []
    out: dict[str, Any] = {}
    window = facts.get("window") or {}
    max_entries = _int(_sysctl(facts, "net.netfilter.nf_conntrack_max"))
    svg = _draw(charts.usage, window.get("series"), max_entries, warn_pct, crit_pct)
    out["usage"] = _chart(svg,
        "No polling window: run the audit with --duration S to chart the count over time."
        if not window else "The polling window has no count readings that can be charted.")
    flows = facts.get("flows") or {}
    classes = flows.get("classes") or {}
    svg = _draw(charts.mix, classes)
    out["mix"] = _chart(svg,
        "The table was not sampled (--no-sample, a snapshot without a sample, or the table "
        "could not be read): no mix of entries." if not flows else
        "The sample holds no entries.")
    recommended = {f.get("parameter"): f.get("recommended") for f in findings
                   if f.get("parameter") and _int(f.get("recommended")) is not None}
    idle = []
    ranked = sorted(classes.items(), key=lambda kv: -(_int(kv[1].get("entries")) or 0))
    for i, (name, cls) in enumerate(ranked[:IDLE_CHARTS]):
        svg = _draw(charts.idle, name, cls, recommended.get(cls.get("timeout_key")))
        if svg:
            # the chart's id is derived from this name: unique within the page
            svg = svg.replace("chart-idle-", f"chart-idle{i}-")
            idle.append({"name": name, "svg": Markup(svg), "timeout_key": cls.get(
                "timeout_key"), "recommended": recommended.get(cls.get("timeout_key")),
                "timeout": cls.get("timeout")})
    out["idle"] = idle
    out["idle_more"] = [name for name, _ in ranked[IDLE_CHARTS:]]
    out["idle_none"] = (None if idle else
                        "No idle times: the table was not sampled or holds no entries."
                        if not classes else "The sample's classes hold no idle times.")
    mem = next((f for f in findings if f.get("rule") == "table-memory"), None)
    ev = (mem or {}).get("evidence") or {}
    svg = _draw(charts.memory, ev.get("cost_now"), ev.get("cost_planned"), ev.get("budget"))
    out["memory"] = _chart(svg,
        "No memory figures: the table-memory rule did not run or could not assess this host.")
    return out


def render_audit(report: Mapping[str, Any], warn_pct: float = 75.0, crit_pct: float = 95.0
                 ) -> str:
    """The audit report page from the --format json document (man/ct-tune-json.5)."""
    facts = report.get("facts") or {}
    host = facts.get("host") or {}
    findings = _by_severity(list(report.get("findings") or []))
    counts = {s: sum(f.get("severity") == s for f in findings) for s in reversed(ORDER)}
    window = facts.get("window") or {}
    context = {
        "version": __version__,
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "status": report.get("status") or "unknown",
        "profile": report.get("profile"),
        "host": {
            "name": host.get("hostname") or "(unknown host)",
            "kernel": host.get("kernel_release") or "unknown",
            "arch": host.get("arch"),
            "memory": fmt_bytes(host.get("mem_total_bytes")),
            "cpus": host.get("cpus_online") if host.get("cpus_online") else "unknown",
            "collected_at": facts.get("collected_at") or "unknown",
        },
        "count": _int(_sysctl(facts, "net.netfilter.nf_conntrack_count")),
        "max": _int(_sysctl(facts, "net.netfilter.nf_conntrack_max")),
        "window": window,
        "findings": findings,
        "counts": {s: n for s, n in counts.items() if n},
        "errors": list(report.get("errors") or []),
        "charts": _audit_charts(report, warn_pct, crit_pct),
        "warn_pct": warn_pct, "crit_pct": crit_pct,
    }
    return _env().get_template("report.html.j2").render(**context)


def render_fleet(report: Mapping[str, Any]) -> str:
    """The fleet report page from the fleet JSON (schema ct-tune-fleet/1): hosts by usage
    and by worst finding, the summary of findings, and a host x finding overview."""
    from ct_tune import charts

    hosts = list(report.get("hosts") or [])
    summary = list(report.get("summary") or [])
    # overview columns: the summary's findings (warning and above, unknown), most hosts first
    # (one column per id: the summary has a line per id and severity; table-usage is
    # the fleet's usage count, not a finding)
    found = {f.get("id") for h in hosts for f in h.get("findings") or []}
    columns = list(dict.fromkeys(s.get("id") for s in summary if s.get("id") in found))
    rows = []
    for h in hosts:
        by_id: dict[str, Mapping[str, Any]] = {}
        for f in h.get("findings") or []:
            fid = f.get("id")
            if fid in columns and (fid not in by_id or _RANK.get(f.get("severity"), 0)
                                   > _RANK.get(by_id[fid].get("severity"), 0)):
                by_id[fid] = f
        rows.append({"host": h, "cells": [by_id.get(c) for c in columns]})
    statuses: dict[str, int] = {}
    for h in hosts:
        statuses[str(h.get("status") or "unknown")] = statuses.get(
            str(h.get("status") or "unknown"), 0) + 1
    usage_svg = _draw(charts.fleet_usage, hosts)
    worst_svg = _draw(charts.fleet_worst, hosts)
    context = {
        "version": __version__,
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "schema": report.get("schema"),
        "hosts": hosts, "rows": rows, "columns": columns, "summary": summary,
        "skipped": list(report.get("skipped") or []),
        "statuses": {s: statuses[s] for s in ("critical", "warning", "unknown", "ok")
                     if s in statuses} | {s: n for s, n in statuses.items()
                                          if s not in ("critical", "warning", "unknown", "ok")},
        "usage_chart": _chart(usage_svg, "No host has a known table usage (count and max)."),
        "worst_chart": _chart(worst_svg, "No hosts in the report."),
    }
    return _env().get_template("fleet.html.j2").render(**context)
