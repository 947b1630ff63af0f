"""The audit as a Prometheus textfile-collector file (node_exporter
--collector.textfile.directory), in the text exposition format.

Pure: a function of the audit JSON document (render.report), so the metrics never
disagree with ``--format json``.  Every series is a ``ct_tune_`` gauge in base units
(seconds, ratios, entries); node_exporter's own conntrack collector already exports
the entries and the limit (node_nf_conntrack_entries, _entries_limit), so they are
not repeated here.  No sample timestamps: the textfile collector rejects them.
"""

from __future__ import annotations

import math
from typing import Any

from ct_tune.findings import ORDER

SUFFIX = ".prom"
#: ct_tune_status values: the exit status of audit/check (monitoring-plugin convention).
STATUS_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
COUNT = "net.netfilter.nf_conntrack_count"
MAX = "net.netfilter.nf_conntrack_max"


def valid_name(name: str) -> bool:
    """node_exporter reads only the *.prom files of the directory (so the temporary file
    of the atomic write, .NAME.XXXXXXXX.tmp, is never read)."""
    return name.endswith(SUFFIX) and len(name) > len(SUFFIX)


def escape_label(value: str) -> str:
    """Label value per the exposition format: backslash, double quote and line feed."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class _Doc:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str,
              samples: list[tuple[dict[str, str], float]]) -> None:
        if not samples:
            return
        full = f"ct_tune_{name}"
        self.lines.append(f"# HELP {full} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {full} gauge")
        for labels, value in samples:
            lab = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{full}{{{lab}}} {_number(value)}" if lab
                              else f"{full} {_number(value)}")


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def render(report: dict[str, Any] | None, now: float, status: str | None = None,
           version: str | None = None) -> str:
    """The .prom file.  `report` None: the run failed before an assessment (bad input);
    only the run time, success 0 and status unknown are written, so an alert on
    ct_tune_last_run_success == 0 fires.  `status` overrides the report's (check's
    usage thresholds)."""
    d = _Doc()
    problems = ((report or {}).get("facts") or {}).get("errors") or []
    ok = report is not None and not problems
    state = status or (report or {}).get("status") or "unknown"
    d.gauge("last_run_timestamp_seconds", "When ct-tune last ran (Unix time).", [({}, now)])
    d.gauge("last_run_success", "1 if the last run read every input and assessed the "
            "host, 0 if an input was bad (see its log).", [({}, 1 if ok else 0)])
    d.gauge("status", "Overall status: 0 ok, 1 warning, 2 critical, 3 unknown "
            "(the exit status of ct-tune audit/check).",
            [({}, STATUS_CODES.get(state, 3))])
    if report is None:
        return "\n".join(d.lines) + "\n"
    d.gauge("input_errors", "Inputs (procfs/sysfs files, snapshot fields) the last run "
            "could not read; the findings that needed them are unknown.",
            [({}, len(problems))])
    if version:
        d.gauge("info", "ct-tune version and profile of the last run (always 1).",
                [({"version": version, "profile": str(report.get("profile", ""))}, 1)])
    findings = report.get("findings") or []
    levels = list(ORDER) + sorted({f.get("severity", "") for f in findings}
                                  - set(ORDER) - {""})
    d.gauge("findings", "Findings of the last run by severity.",
            [({"severity": s}, sum(1 for f in findings if f.get("severity") == s))
             for s in levels])
    current: dict[str, int] = {}
    recommended: dict[str, int] = {}
    # worst finding first (the audit's own order otherwise): it decides a parameter
    # named by more than one rule
    rank = {s: i for i, s in enumerate(levels)}
    for f in sorted(findings, key=lambda f: -rank.get(f.get("severity"), 0)):
        p = f.get("parameter")
        if not p:
            continue
        if _int(f.get("current")) is not None:
            current.setdefault(p, f["current"])
        if _int(f.get("recommended")) is not None:
            recommended.setdefault(p, f["recommended"])
    d.gauge("parameter_current", "Current value of a tuned sysctl (timeouts in seconds, "
            "sizes in entries).", [({"parameter": p}, v) for p, v in sorted(current.items())])
    d.gauge("parameter_recommended", "Value ct-tune recommends for the sysctl (same units "
            "as ct_tune_parameter_current).",
            [({"parameter": p}, v) for p, v in sorted(recommended.items())])
    facts = report.get("facts") or {}
    sysctl = facts.get("sysctl") or {}
    count = _int((sysctl.get(COUNT) or {}).get("value"))
    limit = _int((sysctl.get(MAX) or {}).get("value"))
    if count is not None and limit:
        d.gauge("usage_ratio", "Tracked entries / nf_conntrack_max when ct-tune ran "
                "(0..1).", [({}, count / limit)])
    window = facts.get("window") or {}
    if _int(window.get("peak")) is not None:
        d.gauge("sampled_peak_entries", "Highest entry count polled during the --duration "
                "window.", [({}, window["peak"])])
        d.gauge("sampled_window_seconds", "Length of that polling window.",
                [({}, window.get("seconds") or 0)])
    return "\n".join(d.lines) + "\n"
