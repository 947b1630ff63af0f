"""Charts for the HTML reports: data in, one standalone SVG string out.

Pure functions over the report's facts (no I/O).  pygal draws them (it emits SVG
through ElementTree, so every label from the input, a hostname or a class name, is
escaped by the serializer); what it adds for the browser is taken out again, so an
SVG here is plain markup: no script (pygal's tooltips load a script from a CDN unless
``js=[]``, and even then it embeds an inline config script), no comments carrying its
home page, no namespace URLs (an SVG inline in HTML needs none), and an id derived
from the chart's name instead of a random UUID, so the same data gives the same bytes.

Each function returns None when its data is absent; the report says so in a sentence.
pygal is the optional extra ``report`` (``pip install 'ct-tune[report]'``).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

import pygal
from pygal.style import Style

#: points plotted of the usage series (the highest poll of each stretch is kept)
USAGE_POINTS = 300
#: bars drawn of an idle-time histogram (the kernel-side one has up to 1024 bins)
IDLE_BARS = 60
#: classes in the mix chart; the rest are summed as "other"
MIX_CLASSES = 12
#: hosts in a fleet chart (worst first); the rest are counted in the chart's title
FLEET_HOSTS = 40

SEVERITY_COLOURS = {"critical": "#c62828", "warning": "#ef6c00", "unknown": "#6d6d6d",
                    "info": "#1565c0", "ok": "#2e7d32"}

_STYLE_ARGS: dict[str, Any] = dict(
    background="#ffffff", plot_background="#ffffff", foreground="#222222",
    foreground_strong="#000000", foreground_subtle="#777777", opacity=".85",
    opacity_hover=".95", transition="0ms",
    font_family="system-ui, 'DejaVu Sans', 'Liberation Sans', Arial, sans-serif",
    label_font_size=11, major_label_font_size=11, legend_font_size=12, title_font_size=14,
    value_font_size=11,
    colors=("#1565c0", "#2e7d32", "#ef6c00", "#c62828", "#6a1b9a", "#00838f", "#5d4037",
            "#9e9d24", "#ad1457", "#37474f", "#283593", "#558b2f"),
)
_STYLE = Style(**_STYLE_ARGS)


def _style(*colours: str, stroke: float | None = None) -> Style:
    """The report's style with the series drawn in these colours, in order (and lines
    this wide: pygal's per-series width is overridden by its own .line rule)."""
    extra = {"stroke_width": str(stroke)} if stroke else {}
    return Style(**{**_STYLE_ARGS, "colors": colours, **extra})


#: tick steps for an axis of seconds: round durations
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600,
          12 * 3600, 86400, 2 * 86400, 5 * 86400, 10 * 86400, 30 * 86400)


def _ticks(hi: float, most: int = 10) -> list[float]:
    """Round-duration ticks from 0 to at least hi, at most `most` + 1 of them."""
    step = next((s for s in _STEPS if hi / s <= most), None)
    if step is None:
        step = _STEPS[-1] * math.ceil(hi / most / _STEPS[-1])
    return [i * step for i in range(math.ceil(hi / step) + 1)]


_BASE = {"js": [], "disable_xml_declaration": True, "style": _STYLE, "width": 900,
         "height": 440, "legend_at_bottom": True, "legend_at_bottom_columns": 2,
         "margin_bottom": 40,
         "explicit_size": False, "print_zeroes": True, "truncate_legend": 60,
         "truncate_label": 40}

_ID = re.compile(r"[^a-z0-9-]+")


def _num(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _bytes(value: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{int(value):,} B"


def _seconds(value: float) -> str:
    """Seconds as a duration in at most two units: 75 -> '1 min 15 s', 129600 -> '1 d 12 h'."""
    value = float(value)
    if not math.isfinite(value) or abs(value) < 60:
        return f"{value:g} s"
    rest, parts = round(value), []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size:,} {unit}")
            rest %= size
    return " ".join(parts[:2])


def svg(chart: Any, name: str) -> str:
    """The chart as plain SVG markup for an HTML page (see the module docstring)."""
    root = chart.render_tree()
    uid = root.get("id", "").removeprefix("chart-")
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag == "script" or callable(child.tag):  # ET.Comment is a function
                parent.remove(child)
    for key in [k for k in root.attrib if k.startswith("xmlns")]:
        del root.attrib[key]
    slug = _ID.sub("-", name.lower()).strip("-") or "chart"
    root.set("role", "img")
    root.set("aria-label", name)
    text = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    # the id is the root's and every CSS selector's in pygal's <style>: "chart-<uuid>"
    return text.replace(uid, slug) if uid else text


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               and abs(v) < 1e15 for v in values)


def _thin(points: Sequence[Sequence[float]], most: int) -> list[tuple[float, float]]:
    """At most `most` points, the highest of each stretch kept; x from the first point
    (a snapshot's window starts at 0 s, but nothing else guarantees it)."""
    pts = [(float(p[0]), float(p[1])) for p in points if len(p) == 2 and _finite(*p)]
    if pts:
        pts = [(x - pts[0][0], y) for x, y in pts]
    if len(pts) <= most:
        return pts
    step = -(-len(pts) // most)
    return [max(pts[i:i + step], key=lambda p: p[1]) for i in range(0, len(pts), step)]


def usage(series: Sequence[Sequence[float]] | None, max_entries: int | None,
          warn_pct: float = 75.0, crit_pct: float = 95.0) -> str | None:
    """nf_conntrack_count over the polling window against max and the warning and
    critical lines (check's thresholds): how close the table came to refusing flows."""
    pts = _thin(series or [], USAGE_POINTS)
    if len(pts) < 1:
        return None
    end = max(pts[-1][0], pts[0][0] + 1)
    chart = pygal.XY(**{**_BASE, "style": _style("#1565c0", "#c62828", "#ef6c00", "#000000",
                                                    stroke=2)},
                     title="Entries over the sampling window", x_title="seconds",
                     y_title="entries", show_x_guides=False, dots_size=1.5,
                     value_formatter=_num, x_value_formatter=lambda v: f"{v:g}",
                     include_x_axis=True)
    chart.add("nf_conntrack_count", pts, stroke_style={"width": 2})
    if max_entries:
        for label, value, dash in (
                (f"critical ({crit_pct:g} %)", max_entries * crit_pct / 100, "2,3"),
                (f"warning ({warn_pct:g} %)", max_entries * warn_pct / 100, "6,4"),
                ("nf_conntrack_max", max_entries, "")):
            chart.add(f"{label}: {_num(value)}", [(pts[0][0], value), (end, value)],
                      stroke_style={"width": 1.5, "dasharray": dash} if dash else
                      {"width": 2}, dots_size=1)
    return svg(chart, "usage")


def mix(classes: Mapping[str, Mapping[str, Any]] | None) -> str | None:
    """Entries per flow class (protocol/state/flag) of the sample, most first."""
    counts = sorted(((name, int(c.get("entries") or 0)) for name, c in (classes or {}).items()),
                    key=lambda kv: (-kv[1], kv[0]))
    counts = [kv for kv in counts if kv[1] > 0]
    if not counts:
        return None
    shown = counts[:MIX_CLASSES]
    rest = sum(c for _, c in counts[MIX_CLASSES:])
    if rest:
        shown.append((f"other ({len(counts) - MIX_CLASSES} classes)", rest))
    total = sum(c for _, c in counts)
    chart = pygal.HorizontalBar(**{**_BASE, "height": 120 + 28 * len(shown)},
                                title=f"Entries by class ({_num(total)} in the sample)",
                                show_legend=False, print_values=True, value_formatter=_num)
    chart.x_labels = [name for name, _ in reversed(shown)]
    chart.add("entries", [c for _, c in reversed(shown)])
    return svg(chart, "mix")


def _bins(cls: Mapping[str, Any], bars: int) -> tuple[list[tuple[float, float, float]], float]:
    """The class's idle histogram regrouped into at most `bars` bars: (count, start, end)."""
    width = cls.get("idle_bin_seconds") or 1
    width = float(width) if _finite(width) and width > 0 else 1.0
    hist = {int(k): int(v) for k, v in (cls.get("idle_histogram") or {}).items()
            if str(k).isdigit() and _finite(v) and v > 0}
    if not hist:
        return [], width
    top = max(hist) + 1
    group = max(1, -(-top // bars))
    out: dict[int, int] = {}
    for idx, count in hist.items():
        out[idx // group] = out.get(idx // group, 0) + count
    return [(float(c), g * group * width, (g + 1) * group * width)
            for g, c in sorted(out.items())], width * group


def idle(name: str, cls: Mapping[str, Any], recommended: int | None) -> str | None:
    """How long the class's entries have been idle, split at the recommended timeout:
    the bars beyond it are the entries that timeout would already have expired.  The
    current and recommended timeouts are drawn as vertical lines."""
    bins, _ = _bins(cls, IDLE_BARS)
    if not bins:
        return None
    current = cls.get("timeout") if _finite(cls.get("timeout")) else None
    recommended = recommended if _finite(recommended) else None
    cut = recommended if recommended is not None and recommended != current else None
    # the timeout lines reach above the highest bar, so they show where the bars are dense
    top = max(b[0] for b in bins) * 1.1
    colours = ("#1565c0", "#ef6c00", "#333333", "#c62828") if cut is not None else (
        "#1565c0", "#333333")
    chart = pygal.XY(**{**_BASE, "style": _style(*colours, stroke=2.5)},
                     title=f"{name}: seconds since the last packet", x_title="idle time",
                     y_title="entries", fill=False, show_x_guides=False, dots_size=1.5,
                     value_formatter=_num, x_value_formatter=_seconds, include_x_axis=True)
    chart.x_labels = _ticks(max([bins[-1][2], current or 0, cut or 0]))
    kept, cut_off = [], []
    for count, lo, hi in bins:
        # a bar straddling the cut counts with the side its middle is on
        (cut_off if cut is not None and (lo + hi) / 2 >= cut else kept).append((count, lo, hi))

    def bars(items: list[tuple[float, float, float]]) -> list[tuple[float, float] | None]:
        pts: list[tuple[float, float] | None] = []
        for count, lo, hi in items:
            pts += [(lo, 0), (lo, count), (hi, count), (hi, 0), None]
        return pts

    label = "entries" if cut is None else "entries kept under the recommended timeout"
    chart.add(f"{label}: {_num(sum(b[0] for b in kept))}", bars(kept), fill=True,
              allow_interruptions=True, show_dots=False)
    if cut is not None:
        chart.add(f"expired by it: {_num(sum(b[0] for b in cut_off))}", bars(cut_off),
                  fill=True, allow_interruptions=True, show_dots=False)
    if current:
        chart.add(f"current timeout {_seconds(current)}", [(current, 0), (current, top)],
                  stroke_style={"width": 2, "dasharray": "6,4"}, dots_size=1)
    if cut is not None:
        chart.add(f"recommended {_seconds(cut)}", [(cut, 0), (cut, top)],
                  stroke_style={"width": 4}, dots_size=1)
    return svg(chart, f"idle-{name}")


def memory(cost_now: float | None, cost_planned: float | None, budget: float | None
           ) -> str | None:
    """What a full table costs at the current and the recommended max, beside the
    memory budget of the profile."""
    bars = [(label, v) for label, v in (("full table now", cost_now),
                                        ("at the recommended max", cost_planned),
                                        ("memory budget", budget))
            if _finite(v) and v >= 0]
    if not any(label != "memory budget" for label, _ in bars):
        return None
    chart = pygal.HorizontalBar(**{**_BASE, "height": 260}, title="Kernel memory of the table",
                                print_values=True, value_formatter=_bytes, show_legend=False)
    chart.x_labels = [label for label, _ in reversed(bars)]
    chart.add("bytes", [{"value": v, "color": "#9e9e9e" if label == "memory budget" else
                         "#1565c0" if label == "full table now" else "#ef6c00"}
                        for label, v in reversed(bars)])
    return svg(chart, "memory")


def fleet_usage(hosts: Sequence[Mapping[str, Any]]) -> str | None:
    """Hosts by table usage (count / max), highest first, coloured by status."""
    rows = sorted(((str(h.get("host") or h.get("source") or "?"), float(h["usage"]),
                    str(h.get("status") or "unknown"))
                   for h in hosts if _finite(h.get("usage"))),
                  key=lambda r: (-r[1], r[0]))
    if not rows:
        return None
    shown = rows[:FLEET_HOSTS]
    more = f" (top {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""
    chart = pygal.HorizontalBar(**{**_BASE, "height": 120 + 24 * len(shown)},
                                title=f"Hosts by table usage{more}", show_legend=False,
                                print_values=True, range=(0, max(100, max(
                                    r[1] * 100 for r in shown))),
                                value_formatter=lambda v: f"{v:.1f} %")
    chart.x_labels = [r[0] for r in reversed(shown)]
    chart.add("usage", [{"value": round(r[1] * 100, 2), "color": SEVERITY_COLOURS.get(
        r[2], "#6d6d6d")} for r in reversed(shown)])
    return svg(chart, "fleet-usage")


def fleet_worst(hosts: Sequence[Mapping[str, Any]]) -> str | None:
    """How many hosts have each worst severity (their status)."""
    counts: dict[str, int] = {}
    for h in hosts:
        status = str(h.get("status") or "unknown")
        counts[status] = counts.get(status, 0) + 1
    if not counts:
        return None
    order = [s for s in ("critical", "warning", "unknown", "ok") if s in counts]
    order += sorted(s for s in counts if s not in order)
    chart = pygal.Bar(**{**_BASE, "height": 320}, title="Hosts by worst finding",
                      print_values=True, show_legend=False, value_formatter=_num)
    chart.x_labels = order
    top = max(counts.values())
    step = max(1, math.ceil(top / 10))
    chart.y_labels = list(range(0, top + step, step))  # whole hosts, not 0.2 of one
    chart.add("hosts", [{"value": counts[s], "color": SEVERITY_COLOURS.get(s, "#6d6d6d")}
                        for s in order])
    return svg(chart, "fleet-worst")
