"""The fleet report: many hosts' audit results folded into one overview, with no I/O.

An operator with thousands of snapshots wants two answers first: which hosts to look at
(worst first) and which problems are widespread (a per-finding count of hosts).  This
module computes both from per-host results (``host()``), so the numbers come from the
same findings ``audit`` gives each host; reading the snapshots and printing belong to
fleet_input.py and fleet_table.py.  The JSON layout (``to_json``) is the
``ct-tune-fleet/1`` contract documented in ct-tune(8) under FLEET REPORT.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ct_tune.errors import EXIT_CRITICAL, EXIT_OK, EXIT_UNKNOWN, EXIT_WARNING
from ct_tune.findings import Finding
from ct_tune.formulas import human_duration

SCHEMA = "ct-tune-fleet/1"
#: Host status, worst first: the order of the report and the exit-status precedence of
#: audit (critical > warning > unknown > ok), so a critical host still pages when
#: another snapshot could not be read.
STATUS_ORDER = ("critical", "warning", "unknown", "ok")
_RANK = {s: i for i, s in enumerate(STATUS_ORDER)}
#: Finding severities the summary counts: what someone has to act on or look at.
SUMMARY_SEVERITIES = ("critical", "warning", "unknown")
#: Usage thresholds of the table-usage summary line, in percent of nf_conntrack_max:
#: the defaults of `ct-tune check` (node-mixin warns above 75 %, netdata is critical
#: above 95 %), so the fleet report and the monitoring plugin agree.
USAGE_WARNING = 75
USAGE_CRITICAL = 95
USAGE_ID = "table-usage"
COUNT_KEY = "net.netfilter.nf_conntrack_count"
MAX_KEY = "net.netfilter.nf_conntrack_max"


@dataclass(frozen=True)
class HostFinding:
    """What the overview keeps of one finding (not its explanation: 10,000 hosts)."""

    id: str
    title: str
    severity: str
    parameter: str | None
    current: Any
    recommended: Any
    why: str


@dataclass(frozen=True)
class Host:
    """One audited snapshot."""

    source: str
    host: str | None
    kernel: str | None
    status: str
    count: int | None
    max: int | None
    findings: tuple[HostFinding, ...]

    @property
    def usage(self) -> float | None:
        """count / max, 0..1 (more when the table holds more than max); None without a
        limit (max 0 is unlimited) or without either value."""
        if self.count is None or not self.max:
            return None
        return self.count / self.max


@dataclass(frozen=True)
class Skipped:
    """A snapshot that could not be audited, with every problem, one line each."""

    source: str
    errors: tuple[str, ...]


@dataclass(frozen=True)
class SummaryItem:
    id: str
    severity: str
    hosts: int
    text: str


@dataclass
class Report:
    hosts: list[Host]
    skipped: list[Skipped]
    summary: list[SummaryItem] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The fleet's status: its worst host's, and unknown at least when a snapshot was
        skipped (a host ct-tune could not read is never ok)."""
        states = [h.status for h in self.hosts] + ["unknown"] * bool(self.skipped)
        if not states:
            return "unknown"
        return min(states, key=lambda s: _RANK.get(s, _RANK["unknown"]))

    def counts(self) -> dict[str, int]:
        """Hosts by status, every status present (0 when none)."""
        c = Counter(h.status for h in self.hosts)
        return {s: c.get(s, 0) for s in STATUS_ORDER}


def _int(facts: dict[str, Any], key: str) -> int | None:
    value = (facts.get("sysctl") or {}).get(key, {}).get("value")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def host(source: str, facts: dict[str, Any], findings: Iterable[Finding], status: str) -> Host:
    """One host's line of the report from its facts and its audit (engine) result."""
    info = facts.get("host") or {}
    return Host(
        source=source, host=info.get("hostname"), kernel=info.get("kernel_release"),
        status=status, count=_int(facts, COUNT_KEY), max=_int(facts, MAX_KEY),
        findings=tuple(HostFinding(f.rule, f.title, f.severity, f.parameter, f.current,
                                   f.recommended, f.summary) for f in findings))


def sort_key(h: Host) -> tuple[Any, ...]:
    """Worst status first, then the fullest table, then by host name and file."""
    usage = h.usage
    return (_RANK.get(h.status, _RANK["unknown"]), usage is None, -(usage or 0.0),
            h.host or "", h.source)


def _fmt_value(parameter: str | None, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if parameter and "_timeout" in parameter:
            return human_duration(value)
        return f"{value:,}"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _hosts(n: int) -> str:
    return f"{n:,} host{'s' if n != 1 else ''}"


def _rule_text(title: str, severity: str, parameter: str | None,
               currents: Counter[str]) -> str:
    """The rule's title, with the current value the hosts share (or the most common one)."""
    if severity == "unknown":
        return f"{title}: cannot assess"
    if not parameter or not currents:
        return title
    value, _ = currents.most_common(1)[0]
    return f"{title} {value}" if len(currents) == 1 else f"{title}, most at {value}"


def summarize(hosts: Sequence[Host]) -> list[SummaryItem]:
    """Per (finding, severity) at warning or above or unknown: how many hosts have it,
    most hosts first; plus the table-usage lines over the check thresholds."""
    seen: dict[tuple[str, str], tuple[str, str | None, Counter[str]]] = {}
    n: Counter[tuple[str, str]] = Counter()
    over_warning = over_critical = 0
    for h in hosts:
        if h.count is not None and h.max:
            if h.count * 100 > USAGE_CRITICAL * h.max:
                over_critical += 1
            elif h.count * 100 > USAGE_WARNING * h.max:
                over_warning += 1
        counted: set[tuple[str, str]] = set()
        for f in h.findings:
            if f.severity not in SUMMARY_SEVERITIES:
                continue
            key = (f.id, f.severity)
            if key in counted:  # one host counts once per finding and severity
                continue
            counted.add(key)
            n[key] += 1
            title, param, currents = seen.setdefault(key, (f.title, f.parameter, Counter()))
            if f.current is not None:
                currents[_fmt_value(f.parameter, f.current)] += 1
    items = []
    for (rid, sev), count in n.items():
        title, param, currents = seen[(rid, sev)]
        items.append(SummaryItem(rid, sev, count,
                                 f"{_hosts(count)}: {_rule_text(title, sev, param, currents)}"))
    if over_critical:
        items.append(SummaryItem(USAGE_ID, "critical", over_critical,
                                 f"{_hosts(over_critical)}: table over {USAGE_CRITICAL} %"))
    if over_warning:
        items.append(SummaryItem(USAGE_ID, "warning", over_warning,
                                 f"{_hosts(over_warning)}: table over {USAGE_WARNING} %"))
    items.sort(key=lambda i: (-i.hosts, _RANK.get(i.severity, _RANK["unknown"]), i.id))
    return items


def build(hosts: Iterable[Host], skipped: Iterable[Skipped] = ()) -> Report:
    """The report: hosts worst first, skipped snapshots in input order, the summary."""
    ordered = sorted(hosts, key=sort_key)
    return Report(ordered, list(skipped), summarize(ordered))


def exit_code(report: Report) -> int:
    """Monitoring-plugin status of the whole fleet, as audit's for one host."""
    return {"ok": EXIT_OK, "warning": EXIT_WARNING, "critical": EXIT_CRITICAL,
            "unknown": EXIT_UNKNOWN}[report.status]


def _finding_json(f: HostFinding) -> dict[str, Any]:
    return {"id": f.id, "severity": f.severity, "parameter": f.parameter,
            "current": f.current, "recommended": f.recommended, "why": f.why}


def to_json(report: Report) -> dict[str, Any]:
    """The ``ct-tune-fleet/1`` document."""
    return {
        "schema": SCHEMA,
        "hosts": [{"source": h.source, "host": h.host, "kernel": h.kernel,
                   "status": h.status, "count": h.count, "max": h.max,
                   "usage": None if h.usage is None else round(h.usage, 6),
                   "findings": [_finding_json(f) for f in h.findings]}
                  for h in report.hosts],
        "skipped": [{"source": s.source, "errors": list(s.errors)} for s in report.skipped],
        "summary": [{"id": i.id, "severity": i.severity, "hosts": i.hosts, "text": i.text}
                    for i in report.summary],
    }
