"""The fleet report as text: a host x finding matrix, worst first, then the summary.

Pure: from a fleet.Report to a string; cli.py writes it.  One row per host and one
narrow column per finding that is at warning or above (or unknown) on some host, so a
fleet of thousands still reads down one screen column; the legend under the matrix
names the columns, and the summary says how many hosts share each finding.
"""

from __future__ import annotations

import os

from ct_tune import fleet
from ct_tune.findings import one_line

#: cell marks, by finding severity (a blank cell: the host does not have that finding
#: at warning or above)
MARKS = {"critical": "C", "warning": "W", "unknown": "?"}
_HOST_WIDTH = 32


def _columns(report: fleet.Report) -> list[str]:
    """Rule ids with a marked cell, in the summary's order (most hosts first)."""
    ids: list[str] = []
    for item in report.summary:
        if item.id != fleet.USAGE_ID and item.id not in ids:
            ids.append(item.id)
    return ids


def _cut(text: str, width: int) -> str:
    text = one_line(text)
    return text if len(text) <= width else text[:width - 1] + "~"


def _usage(h: fleet.Host) -> str:
    if h.usage is None:
        return "-"
    return f"{h.usage * 100:.1f}%"


def _cell(h: fleet.Host, rid: str) -> str:
    worst = ""
    for f in h.findings:
        if f.id == rid and f.severity in MARKS and (
                not worst or fleet.STATUS_ORDER.index(f.severity)
                < fleet.STATUS_ORDER.index(worst)):
            worst = f.severity
    return MARKS.get(worst, ".")


def render(report: fleet.Report) -> str:
    """The matrix, its legend and the summary."""
    cols = _columns(report)
    names = [_cut(h.host or "-", _HOST_WIDTH) for h in report.hosts]
    files = [_cut(os.path.basename(h.source), _HOST_WIDTH) for h in report.hosts]
    width = max([len("HOST"), *map(len, names)])
    fwidth = max([len("SNAPSHOT"), *map(len, files)])
    num = [str(i + 1) for i in range(len(cols))]
    cw = max([1, *map(len, num)])
    head = f"{'HOST':<{width}}  {'SNAPSHOT':<{fwidth}}  {'STATUS':<8}  {'USAGE':>6}"
    lines = [(head + "  " + " ".join(n.rjust(cw) for n in num)).rstrip()]
    for name, file, h in zip(names, files, report.hosts, strict=True):
        row = f"{name:<{width}}  {file:<{fwidth}}  {h.status.upper():<8}  {_usage(h):>6}"
        lines.append((row + "  " + " ".join(_cell(h, c).rjust(cw) for c in cols)).rstrip())
    if not report.hosts:
        lines.append("(no snapshot could be audited)")
    if cols:
        lines.append("")
        lines.append("columns: " + ", ".join(f"{n} {c}" for n, c in zip(num, cols,
                                                                        strict=True)))
        lines.append("cells: C critical, W warning, ? unknown, . neither")
    counts = report.counts()
    total = len(report.hosts)
    state = ", ".join(f"{counts[s]:,} {s}" for s in fleet.STATUS_ORDER)
    skipped = len(report.skipped)
    lines.append("")
    lines.append(f"fleet: {total:,} host{'s' if total != 1 else ''} ({state})"
                 + (f", {skipped:,} snapshot{'s' if skipped != 1 else ''} skipped "
                    "(problems on stderr)" if skipped else "")
                 + f"; status {report.status.upper()}")
    for item in report.summary:
        lines.append(f"  [{MARKS[item.severity]}] {item.text}")
    return "\n".join(lines)
