"""The monitoring-plugin view of an audit: one status line with perfdata, and a state.

Pure: it reads only the audit JSON document (render.report), so `ct-tune check` can
never disagree with `ct-tune audit --format json` about the same host.  Format per the
Monitoring Plugins development guidelines (https://www.monitoring-plugins.org/doc/
guidelines.html): ``SERVICE STATE - text | 'label'=value[UOM];[warn];[crit];[min];[max]``,
then one line per finding (long output), and the exit status 0/1/2/3.
"""

from __future__ import annotations

import math
from typing import Any

from ct_tune.findings import error_text

#: Defaults, in percent of nf_conntrack_max: prometheus/node_exporter
#: docs/node-mixin/alerts/alerts.libsonnet NodeHighNumberConntrackEntriesUsed fires above
#: 75 %; netdata src/health/health.d/netfilter.conf netfilter_conntrack_full is critical
#: above 95 %.
DEFAULT_WARNING = 75.0
DEFAULT_CRITICAL = 95.0

SERVICE = "CT-TUNE"
STATES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
#: monitoring-plugins lib/states.h max_state_alt: OK < UNKNOWN < WARNING < CRITICAL, so a
#: usage alarm is never hidden behind a finding that could not be assessed.
_RANK = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}
_FOLDED = ("critical", "warning", "unknown")
COUNT = "net.netfilter.nf_conntrack_count"
MAX = "net.netfilter.nf_conntrack_max"


def _num(x: float) -> str:
    """A perfdata number: class [-0-9.] only (no exponent, no locale)."""
    if isinstance(x, int) or float(x).is_integer():
        return str(int(x))
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _clean(text: str) -> str:
    """Plugin text never contains '|' (it starts the perfdata) nor a line break."""
    return " ".join(str(text).replace("|", "/").split())


def _value(facts: dict[str, Any], key: str) -> int | None:
    v = (facts.get("sysctl") or {}).get(key, {}).get("value")
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def worst(*states: str) -> str:
    return max(states, key=lambda s: _RANK.get(s, _RANK["unknown"]))


def usage_state(count: int, limit: int, warning: float, critical: float) -> str:
    """'critical' above critical %, 'warning' above warning % (a plain threshold N of the
    guidelines alerts outside 0..N), else 'ok'.  Integer arithmetic: no rounding at the edge."""
    if limit <= 0:
        return "ok"
    if count * 100 > critical * limit:
        return "critical"
    if count * 100 > warning * limit:
        return "warning"
    return "ok"


def evaluate(report: dict[str, Any], warning: float = DEFAULT_WARNING,
             critical: float = DEFAULT_CRITICAL) -> tuple[str, str]:
    """(state, plugin output) of an audit report under the usage thresholds (percent)."""
    facts = report.get("facts") or {}
    count, limit = _value(facts, COUNT), _value(facts, MAX)
    window = facts.get("window") or {}
    peak = window.get("peak")
    texts: list[str] = []
    perf: list[str] = []
    state = report.get("status", "unknown")
    state = state if state in STATES else "unknown"
    problems = [error_text(e) for e in facts.get("errors") or ()]
    if problems:
        # an input ct-tune could not read: the reason leads the status line
        texts.append(problems[0] + (f" (+{len(problems) - 1} more input problems)"
                                    if len(problems) > 1 else ""))
        state = worst(state, "unknown")
    loaded = (facts.get("conntrack") or {}).get("loaded")
    if not loaded:
        texts.append("nf_conntrack not loaded: no table")
    elif count is None or limit is None:
        if not problems:
            texts.append("entries or nf_conntrack_max unreadable")
        state = worst(state, "unknown")
    elif limit == 0:
        texts.append(f"{count} entries, no limit (nf_conntrack_max = 0)")
        perf.append(f"'entries'={count};;;0")
    else:
        used = usage_state(count, limit, warning, critical)
        state = worst(state, used)
        pct = count * 100 / limit
        texts.append(f"table {pct:.1f}% full ({count} of {limit} entries)")
        perf.append(f"'entries'={count};{math.floor(limit * warning / 100)};"
                    f"{math.floor(limit * critical / 100)};0;{limit}")
        perf.append(f"'usage'={_num(round(pct, 2))}%;{_num(warning)};{_num(critical)};0;100")
    if isinstance(peak, int) and count is not None:
        perf.append(f"'entries_peak'={peak};;;0" + (f";{limit}" if limit else ""))
    rates = window.get("rates") or {}
    for name in ("drop", "insert_failed"):
        rate = rates.get(f"{name}_per_s")
        if isinstance(rate, int | float) and not isinstance(rate, bool):
            perf.append(f"'{name}_per_s'={_num(rate)};;;0")
    found = [f for f in report.get("findings") or () if f.get("severity") in _FOLDED]
    found.sort(key=lambda f: -_RANK.get(f.get("severity"), 0))
    for sev in _FOLDED:
        ids = [_clean(f.get("rule", "?")) for f in found if f.get("severity") == sev]
        if ids:
            texts.append(f"{sev}: {', '.join(ids)}")
    line = f"{SERVICE} {state.upper()} - {_clean('; '.join(texts))}"
    if perf:
        line += " | " + " ".join(perf)
    # unknown findings only repeat the input problem: listed by id, the problems in full
    long = [f"[INPUT] {_clean(p)}" for p in problems]
    long += [f"[{f['severity'].upper()}] {_clean(f.get('rule', '?'))}: "
             f"{_clean(f.get('summary', ''))}" for f in found if f["severity"] != "unknown"]
    return state, "\n".join([line, *long])


def unknown(reason: str) -> str:
    """The output of a check that could not assess the host (bad input)."""
    return f"{SERVICE} UNKNOWN - {_clean(str(reason).replace(chr(10), '; '))}"
