"""The audit as a terminal shows it: a table that fits the width, colour by severity,
problems first, a summary with counts, a sparkline of the polling window.

Pure: the width, whether to colour and whether the terminal takes UTF-8 are the
caller's (cli.py reads them from the terminal, COLUMNS, NO_COLOR and --color).  Widths
are computed on the plain text; colour codes are added after, so they never count.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ct_tune import units
from ct_tune.findings import ORDER, Finding

#: Worst first; problems (critical, warning, unknown) before info and ok.
SHOWN_ORDER = ("critical", "warning", "unknown", "info", "ok")
_RANK = {s: i for i, s in enumerate(SHOWN_ORDER)}
#: SGR colours by severity (ECMA-48): red bold, yellow, magenta, cyan, green.
_SGR = {"critical": "1;31", "warning": "33", "unknown": "35", "info": "36", "ok": "32"}
MIN_WIDTH = 40
#: the columned table only when the why column gets at least this much room
_WHY_MIN = 30
_GAP = "  "
_HEADERS = ("severity", "parameter", "current", "recommended", "why")
_SPARK_UTF8 = "▁▂▃▄▅▆▇█"
_SPARK_ASCII = "_.-=+*#@"

assert set(SHOWN_ORDER) == set(ORDER)


@dataclass(frozen=True)
class Style:
    """How the terminal takes output: its width, colour, UTF-8."""

    #: None: not a terminal and no COLUMNS: tables at 80 columns, prose unwrapped
    width: int | None = 80
    color: bool = False
    utf8: bool = True

    def paint(self, text: str, severity: str) -> str:
        if not self.color or severity not in _SGR or not text:
            return text
        return f"\x1b[{_SGR[severity]}m{text}\x1b[0m"

    @property
    def columns(self) -> int:
        return max(MIN_WIDTH, self.width or 80)

    @property
    def prose(self) -> int | None:
        """The width to wrap running text to, None to leave it unwrapped (a pipe, a file)."""
        return None if self.width is None else self.columns


def wrap_hanging(line: str, width: int) -> list[str]:
    """One line of prose wrapped to width, continuation lines indented under its text
    (a '  - ' list item under the item's first word); an empty line stays."""
    if len(line) <= width:
        return [line]
    lead = len(line) - len(line.lstrip(" "))
    if line.lstrip(" ").startswith("- "):
        lead += 2
    elif lead and " = " in line:
        lead = line.index(" = ") + 3
    indent = " " * min(lead, width // 2)
    return [w.rstrip() for w in _wrap(line, width, indent, first="")]


def ordered(findings: Sequence[Finding]) -> list[Finding]:
    """Problems first: critical, warning, unknown, then info, then ok; rule order kept
    within a severity (sorted() is stable)."""
    return sorted(findings, key=lambda f: _RANK[f.severity])


def _row(f: Finding) -> tuple[str, str, str, str, str]:
    changes = f.parameter is not None and f.severity != "unknown"
    return (f.severity,
            f.parameter or f"({f.rule})",
            units.value(f.parameter, f.current) if f.parameter else "-",
            units.value(f.parameter, f.recommended) if changes else "-",
            f.summary)


#: a number and its unit stay on one line ("5 d", "66.0 MiB", "95 %")
_UNIT_SPACE = re.compile(r"(?<=\d) (?=(?:d|h|min|s|ms|B|KiB|MiB|GiB|TiB|%)(?![\w-]))")
_GLUE = "\ue000"  # private use: never in a summary, not whitespace to textwrap


def _glued(text: str) -> str:
    """text with each number and its unit joined into one word (see _wrap)."""
    return _UNIT_SPACE.sub(_GLUE, text)


def _wrap(text: str, width: int, indent: str = "", first: str | None = None) -> list[str]:
    """textwrap.wrap, keeping numbers with their units and never breaking at hyphens
    (option names such as --random-fully stay whole)."""
    lines = textwrap.wrap(_glued(text), max(1, width), break_on_hyphens=False,
                          initial_indent=indent if first is None else first,
                          subsequent_indent=indent) or [""]
    return [line.replace(_GLUE, " ") for line in lines]


def table(findings: Sequence[Finding], style: Style, show_all: bool = False) -> str:
    """The findings worth acting on (every one with show_all), one row each.

    Columns when the why column still gets _WHY_MIN characters beside the others, and
    every word of every why fits in it (a key name cut in two, "nf_conntr" / "ack_tcp_...",
    cannot be searched for or pasted); otherwise each finding is a block: severity and
    parameter, the change, then the why, wrapped to the width.  No line is longer than
    style.columns."""
    shown = [f for f in ordered(findings) if show_all or f.severity != "ok"]
    if not shown:
        return ""
    rows = [_row(f) for f in shown]
    width = style.columns
    fixed = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEADERS[:4])]
    why = width - sum(fixed) - len(_GAP) * 4
    longest = max(len(word) for r in rows for word in _glued(r[-1]).split() or [""])
    if why >= max(_WHY_MIN, longest):
        return _columns(rows, fixed, why, style)
    return _blocks(rows, style)


def _columns(rows: list[tuple[str, ...]], fixed: list[int], why: int, style: Style) -> str:
    widths = [*fixed, why]
    out = [_GAP.join(h.ljust(w) for h, w in zip(_HEADERS, widths, strict=True)).rstrip(),
           _GAP.join("-" * w for w in widths)]
    for sev, *cells in rows:
        lines = _wrap(cells[-1], why)
        head = [sev.ljust(widths[0]), *(c.ljust(w) for c, w in zip(cells[:-1], widths[1:4],
                                                                     strict=True))]
        first = _GAP.join([style.paint(head[0][:len(sev)], sev) + head[0][len(sev):],
                           *head[1:], lines[0]])
        out.append(first.rstrip())
        pad = " " * (sum(fixed) + len(_GAP) * 4)
        out += [(pad + line).rstrip() for line in lines[1:]]
    return "\n".join(out)


def _blocks(rows: list[tuple[str, ...]], style: Style) -> str:
    width = style.columns
    indent = " " * 10
    out = []
    for sev, param, cur, rec, why in rows:
        lines = _wrap(f"{sev:<8}{_GAP}{param}", width, indent, first="")
        lines[0] = style.paint(sev, sev) + lines[0][len(sev):]
        if cur != "-" or rec != "-":
            change = (f"{cur} (not assessed)" if sev == "unknown" else f"{cur} -> {rec}"
                      if rec not in ("-", cur) else f"{cur} (keep)")
            lines += _wrap(change, width, indent)
        lines += _wrap(why, width, indent)
        out.append("\n".join(line.rstrip() for line in lines))
    return "\n\n".join(out)


def counts(findings: Sequence[Finding]) -> Counter[str]:
    return Counter(f.severity for f in findings)


def summary(findings: Sequence[Finding], facts: dict[str, Any], status: str, profile: str,
            style: Style, show_all: bool = True) -> str:
    """The last lines: the status, how many findings of each severity (ok rows are
    findings too, but nothing to act on: 'checks passed'), what the table left out, input
    problems, the profile; wrapped to the width (one line for a pipe: grep '^status:')."""
    n = counts(findings)
    parts = [f"{n[s]} {s}" for s in ("critical", "warning", "unknown", "info") if n[s]]
    problems = ", ".join(parts) if parts else "no findings"
    extra = []
    if n["ok"]:
        extra.append(f"{n['ok']} check{'s' if n['ok'] != 1 else ''} ok"
                     + ("" if show_all else " (not shown; --all shows them)"))
    errors = len(facts.get("errors") or [])
    if errors:
        extra.append(f"{errors} input problem{'s' if errors != 1 else ''} (on stderr)")
    extra.append(f"profile {profile}")
    text = f"status: {status.upper()} - {problems}; {'; '.join(extra)}"
    lines = _wrap(text, style.prose, "  ", first="") if style.prose else [text]
    lines[0] = "status: " + style.paint(status.upper(), status) + lines[0][8 + len(status):]
    return "\n".join(lines)


def sparkline(values: Sequence[float], width: int, utf8: bool = True) -> str:
    """Values as block characters, one per column, at most `width` columns: a longer
    series is cut into stretches and each keeps its highest value (a peak survives).
    Scaled from the lowest to the highest value; a flat series is a flat line."""
    if not values or width <= 0:
        return ""
    step = -(-len(values) // width)
    points = [max(values[i:i + step]) for i in range(0, len(values), step)]
    ramp = _SPARK_UTF8 if utf8 else _SPARK_ASCII
    lo, hi = min(points), max(points)
    if hi == lo:
        return ramp[0] * len(points)
    top = len(ramp) - 1
    return "".join(ramp[round((p - lo) * top / (hi - lo))] for p in points)


def window_line(window: dict[str, Any] | None, style: Style) -> str | None:
    """'count over 60 s: ▁▂▅█▇ 1,204..48,213 (peak 48,213)' for a polled window with its
    series ([seconds, count] pairs), fitted to the width; None without one."""
    series = (window or {}).get("series") or []
    values = [p[1] for p in series if isinstance(p, list | tuple) and len(p) == 2
              and isinstance(p[1], int | float) and not isinstance(p[1], bool)]
    if len(values) < 2:
        return None
    head = f"count over {units.duration(round(window.get('seconds') or 0))}: "
    tail = f" {units.number(min(values))}..{units.number(max(values))}"
    room = style.columns - len(head) - len(tail)
    if room < 8:
        head = "count: "
        room = style.columns - len(head) - len(tail)
    if room < 4:
        return None
    return head + sparkline(values, room, style.utf8) + tail


def terminal_style(color: str, stream: Any, environ: dict[str, str] | Any) -> Style:
    """The style for writing to `stream`: its width (COLUMNS, else the terminal's, else
    None), colour (--color always/never; auto: a terminal, TERM not 'dumb', and NO_COLOR
    unset or empty, https://no-color.org) and whether it takes UTF-8."""
    import os

    try:
        tty = stream is not None and stream.isatty()
    except (OSError, ValueError):
        tty = False
    width = None
    columns = str(environ.get("COLUMNS") or "")
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    elif tty:
        try:
            width = os.get_terminal_size(stream.fileno()).columns or None
        except (OSError, ValueError, AttributeError):
            width = None
    if color == "always":
        on = True
    elif color == "never":
        on = False
    else:
        on = tty and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return Style(width=width, color=on, utf8=encoding == "utf8")
