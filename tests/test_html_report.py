"""audit --format html and the fleet page: self-contained, escaped, and charts that plot
the report's own numbers (read back from the SVG), rendered by a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import flowgen
import pytest
from conftest import ROOT, run_cli, tree_args

from ct_tune import facts as facts_mod
from ct_tune import html_report, sampler

pygal = pytest.importorskip("pygal", reason="pygal (the 'report' extra) is not installed")

TCP_EST = "net.netfilter.nf_conntrack_tcp_timeout_established"
MIX = [{"class": "tcp/ESTABLISHED", "count": 3000, "dport": 5432, "idle": [0, 200000]},
       {"class": "tcp/TIME_WAIT", "count": 1500, "idle": [0, 120]},
       {"class": "udp/unreplied", "count": 800, "dport": 53, "idle": [0, 30]},
       {"class": "udp/stream", "count": 200, "dport": 443, "idle": [0, 100]}]


def sampled_tree(tree, hostname: str | None = None) -> facts_mod.Roots:
    """A captured host (95.7 % full, established timeout at the 5-day default) with a table
    dump of four classes: the idle ESTABLISHED entries spread over 0..2.3 days."""
    roots = tree("nearly-full-drops")
    if hostname is not None:
        (roots.procfs / "sys/kernel/hostname").write_text(hostname + "\n")
    flowgen.write_dump(roots, MIX)
    return roots


def audit(roots, tmp_path: Path, *sampling: str, rules: tuple[str, ...] = ()
          ) -> tuple[subprocess.CompletedProcess, str, dict]:
    """The HTML page (-o) and the JSON report of one snapshot of the tree."""
    snap, out = tmp_path / "snap.json", tmp_path / "report.html"
    res = run_cli("collect", *tree_args(roots), "-o", str(snap), *sampling)
    assert res.returncode == 0, res.stderr
    html = run_cli("audit", "--facts", str(snap), "--format", "html", "-o", str(out), *rules)
    js = run_cli("audit", "--facts", str(snap), "--format", "json", *rules)
    assert out.exists(), html.stderr
    snap.unlink()
    return html, out.read_text(), json.loads(js.stdout)


# --- reading the page back ---------------------------------------------------------------

class _Refs(HTMLParser):
    """Everything in a page that could make a browser fetch something."""

    FETCHING_TAGS: ClassVar[set[str]] = {
        "script", "link", "img", "iframe", "object", "embed", "base", "audio", "video",
        "source", "image", "use", "frame", "track", "input", "form"}
    URL_ATTRS: ClassVar[set[str]] = {
        "href", "src", "xlink:href", "action", "formaction", "poster", "data", "srcset",
        "background", "manifest", "ping", "cite", "codebase"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        if tag in self.FETCHING_TAGS:
            self.problems.append(f"<{tag}>")
        if tag == "style":
            self._in_style = True
        if tag == "meta" and any(k == "http-equiv" for k, _ in attrs):
            self.problems.append("<meta http-equiv>")
        for k, v in attrs:
            v = v or ""
            if k in self.URL_ATTRS and not v.startswith("#"):
                self.problems.append(f"{tag} {k}={v!r}")
            if k.startswith("on"):
                self.problems.append(f"{tag} {k} (script)")
            if k == "style":
                self.css.append(v)
            if "//" in v or re.search(r"(?i)\b(https?|ftp|file):", v):
                self.problems.append(f"{tag} {k}={v!r}")

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.css.append(data)


def external_references(page: str) -> list[str]:
    """What in the page would load something from outside it (empty: self-contained)."""
    p = _Refs()
    p.feed(page)
    for css in p.css:
        if re.search(r"(?i)@import|//|https?:|file:", css):
            p.problems.append(f"css: {css[:80]!r}")
        for target in re.findall(r"(?i)url\(\s*['\"]?([^)'\"]*)", css):
            if not target.startswith("#"):
                p.problems.append(f"css url({target})")
    return p.problems


def svgs(page: str) -> dict[str, ET.Element]:
    """The page's charts by their id."""
    out = {}
    for m in re.finditer(r"<svg\b.*?</svg>", page, re.S):
        el = ET.fromstring(m.group())
        out[el.get("id")] = el
    return out


def _classes(el: ET.Element) -> list[str]:
    return (el.get("class") or "").split()


def legends(svg: ET.Element) -> dict[int, str]:
    """Series index -> its legend text."""
    out = {}
    for g in svg.iter("g"):
        m = re.fullmatch(r"activate-serie-(\d+)", g.get("id") or "")
        if m:
            out[int(m.group(1))] = "".join(g.find("text").itertext())
    return out


def values(svg: ET.Element) -> dict[str, list[str]]:
    """Legend text -> the values pygal wrote for that series' points (desc.value)."""
    names = legends(svg)
    out: dict[str, list[str]] = {}
    for g in svg.iter("g"):
        idx = [c for c in _classes(g) if c.startswith("serie-")]
        if "series" in _classes(g) and idx:
            found = [d.text for d in g.iter("desc") if "value" in _classes(d)]
            if found:
                out.setdefault(names.get(int(idx[0][6:]), idx[0]), []).extend(found)
    return out


def series_group(svg: ET.Element, legend_prefix: str) -> ET.Element:
    """The plot group (the one drawing paths or bars) of the series whose legend starts so
    (or "serie-N" in a chart without a legend)."""
    names = legends(svg)
    idx = next((i for i, n in names.items() if n.startswith(legend_prefix)), None)
    if idx is None:
        idx = int(legend_prefix.removeprefix("serie-"))
    return next(g for g in svg.iter("g") if "series" in _classes(g) and f"serie-{idx}"
                in _classes(g) and (g.find("path") is not None or g.find(".//rect") is not None))


def categories(svg: ET.Element) -> list[str]:
    """A bar chart's category labels, in the order of its values (on the y axis when the
    bars are horizontal)."""
    horizontal = "horizontal" in (svg.get("class") or "") or any(
        "axis" in _classes(g) and "y" in _classes(g) and any(
            not re.fullmatch(r"[\d,.]+( %| [KMG]?i?B)?", t.text or "") for t in g.iter("text"))
        for g in svg.iter("g"))
    axis = "y" if horizontal else "x"
    return [t.text for g in svg.iter("g") if "axis" in _classes(g) and axis in _classes(g)
            for t in g.iter("text")]


def num(text: str) -> float:
    return float(text.replace(",", "").split()[0])


def xy(text: str) -> tuple[str, float]:
    x, _, y = text.partition(": ")
    return x, num(y)


# --- the audit page ----------------------------------------------------------------------

def test_audit_html_is_one_self_contained_file_with_host_status_and_findings(tree, tmp_path):
    roots = sampled_tree(tree)
    res, page, report = audit(roots, tmp_path, "--duration", "0.6", "--interval", "0.2")
    assert res.returncode == 2  # same exit status as the table: the host is critical
    assert res.stdout == ""  # the page went to the file only
    assert external_references(page) == []
    assert "<script" not in page.lower()
    host = report["facts"]["host"]
    for text in (host["hostname"], host["kernel_release"], "15.6 GiB", "CPUs online",
                 report["facts"]["collected_at"], "default"):
        assert text in page
    assert 'class="sev sev-critical">critical<' in page
    # every finding with its explanation, as --explain has them
    for f in report["findings"]:
        assert f"{f['rule']}: {f['title']}" in page
        assert f["explanation"].strip().splitlines()[0] in html_unescape(page)
    # no temporary file left next to it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nearly-full-drops", "report.html"]


def html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_usage_chart_plots_the_polled_counts_against_max_and_check_thresholds(tree, tmp_path):
    roots = sampled_tree(tree)
    # the count rises during the window: a poller changes it between polls
    count_file = roots.procfs / "sys/net/netfilter/nf_conntrack_count"
    proc = subprocess.Popen([sys.executable, "-c", f"""
import time
for n in range(200000, 200000 + 40 * 1000, 1000):
    open({str(count_file)!r}, "w").write(str(n) + "\\n"); time.sleep(0.05)
"""])
    try:
        _, page, report = audit(roots, tmp_path, "--duration", "1.5", "--interval", "0.1")
    finally:
        proc.wait(timeout=30)
    window = report["facts"]["window"]
    # the JSON report's window is the HTML run's own: compare the page with its own series
    chart = svgs(page)["chart-usage"]
    v = values(chart)
    plotted = [xy(t)[1] for t in v["nf_conntrack_count"]]
    assert len(plotted) >= 5 and plotted == sorted(plotted) and len(set(plotted)) > 1
    assert set(plotted) <= set(range(200000, 240000, 1000))
    mx = report["facts"]["sysctl"]["net.netfilter.nf_conntrack_max"]["value"]
    lines = {name.split(":")[0]: {xy(t)[1] for t in vals} for name, vals in v.items()}
    assert lines["nf_conntrack_max"] == {mx}
    assert lines["warning (75 %)"] == {round(mx * 0.75, 1)}
    assert lines["critical (95 %)"] == {round(mx * 0.95, 1)}
    assert len(window["series"]) == window["polls"]


def test_usage_chart_data_is_the_window_series(tree, tmp_path):
    """Same facts through --facts: the plotted points are exactly the snapshot's polls."""
    roots = sampled_tree(tree)
    snap = tmp_path / "snap.json"
    assert run_cli("collect", *tree_args(roots), "-o", str(snap)).returncode == 0
    data = json.loads(snap.read_text())
    series = [[0.0, 240000], [1.0, 250500], [2.0, 262144], [3.0, 259000]]
    data["window"] = sampler.window_summary([c for _, c in series], None, None, 3.0,
                                            [t for t, _ in series])
    snap.write_text(json.dumps(data))
    out = tmp_path / "r.html"
    run_cli("audit", "--facts", str(snap), "--format", "html", "-o", str(out))
    v = values(svgs(out.read_text())["chart-usage"])
    assert [xy(t) for t in v["nf_conntrack_count"]] == [(f"{t:g}", c) for t, c in series]


def test_mix_chart_has_one_bar_per_class_with_its_entries(tree, tmp_path):
    _, page, report = audit(sampled_tree(tree), tmp_path)
    chart = svgs(page)["chart-mix"]
    labels = categories(chart)
    plotted = [num(t) for t in values(chart)["serie-0"]]
    classes = report["facts"]["flows"]["classes"]
    assert dict(zip(labels, plotted, strict=True)) == {
        name: c["entries"] for name, c in classes.items()}
    assert sorted(plotted) == sorted(s["count"] for s in MIX)
    # bar lengths proportional to the counts
    widths = {float(r.get("width")) for r in series_group(chart, "serie-0").iter("rect")}
    assert max(widths) / min(widths) == pytest.approx(3000 / 200, rel=1e-6)


def _bar_heights(svg: ET.Element, legend_prefix: str, zero_y: float, per_unit: float
                 ) -> list[float]:
    """Heights (in entries) of the bars a filled step series draws."""
    out = []
    for path in series_group(svg, legend_prefix).iter("path"):
        if "nofill" in (path.get("class") or ""):
            continue
        ys = [float(y) for _, y in re.findall(r"([-\d.]+)[ ,]([-\d.]+)", path.get("d"))]
        tops = [y for y in ys if abs(y - zero_y) > 1e-6]
        # each bar is (lo,0) (lo,c) (hi,c) (hi,0): its top appears twice
        out += [(zero_y - y) / per_unit for y in tops[::2]]
    return out


def test_idle_chart_shows_current_and_recommended_timeouts_and_what_the_cut_expires(
        tree, tmp_path):
    _, page, report = audit(sampled_tree(tree), tmp_path)
    est = report["facts"]["flows"]["classes"]["tcp/ESTABLISHED"]
    finding = next(f for f in report["findings"] if f["parameter"] == TCP_EST)
    current, recommended = est["timeout"], finding["recommended"]
    assert (current, recommended) == (432000, 86400)
    chart = next(s for k, s in svgs(page).items() if k.startswith("chart-idle0-"))
    v = values(chart)
    cur = next(vals for name, vals in v.items() if name.startswith("current timeout 5 d"))
    rec = next(vals for name, vals in v.items() if name.startswith("recommended 1 d"))
    assert {xy(t)[0] for t in cur} == {"5 d"} and {xy(t)[0] for t in rec} == {"1 d"}
    # the lines' dots give the y scale: their bottom is 0 entries, their top a known count
    dots = {}
    for g in series_group(chart, "recommended").iter("path"):
        pts = re.findall(r"([-\d.]+) ([-\d.]+)", g.get("d"))
        dots = {"x": float(pts[0][0]), "zero": float(pts[0][1]), "top": float(pts[1][1])}
    top = max(xy(t)[1] for t in rec)
    per_unit = (dots["zero"] - dots["top"]) / top
    kept = _bar_heights(chart, "entries kept", dots["zero"], per_unit)
    cut = _bar_heights(chart, "expired by it", dots["zero"], per_unit)
    # every entry of the class is in a bar; those right of the line are the ones idle
    # longer than the recommended timeout (to within one bar)
    assert sum(kept) + sum(cut) == pytest.approx(est["entries"], abs=1)
    width = est["idle_bin_seconds"]
    beyond = sum(c for i, c in est["idle_histogram"].items() if int(i) * width >= recommended)
    assert abs(sum(cut) - beyond) <= max(kept + cut) + 1
    # and idle times spread evenly over 0..200000 s: 200000-86400 of them are beyond 1 d
    assert sum(cut) == pytest.approx(3000 * (200000 - 86400) / 200000, rel=0.03)
    legend = legends(chart)
    assert any(n == f"expired by it: {round(sum(cut)):,}" for n in legend.values())


def test_memory_chart_bars_are_the_table_memory_figures(tree, tmp_path):
    _, page, report = audit(sampled_tree(tree), tmp_path)
    ev = next(f for f in report["findings"] if f["rule"] == "table-memory")["evidence"]
    chart = svgs(page)["chart-memory"]
    labels = categories(chart)
    widths = [float(r.get("width")) for r in series_group(chart, "serie-0").iter("rect")]
    bars = dict(zip(labels, widths, strict=True))
    assert bars["at the recommended max"] / bars["memory budget"] == pytest.approx(
        ev["cost_planned"] / ev["budget"], rel=1e-6)
    assert bars["full table now"] / bars["memory budget"] == pytest.approx(
        ev["cost_now"] / ev["budget"], rel=1e-6)


def test_charts_without_their_data_are_a_sentence(tree, tmp_path):
    roots = tree("nearly-full-drops")  # no table dump, and no --duration
    res, page, _ = audit(roots, tmp_path)
    assert res.returncode == 2
    ids = set(svgs(page))
    assert ids == {"chart-memory"}
    assert "No polling window: run the audit with --duration S" in page
    assert "The table was not sampled" in page
    assert "No idle times" in page


def test_hostile_hostname_and_rule_text_are_escaped(tree, tmp_path):
    evil = '<script>alert(1)</script><img src="http://x/">&amp;'
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "evil.toml").write_text('''id = "evil-rule"
title = "<b onmouseover=alert(2)>bold</b>"
when = "true"
sources = ["<a href='https://example.invalid/'>x</a>"]
explanation = "<iframe src=//evil></iframe>"

[[severity]]
level = "warning"
if = "true"
summary = "<style>@import url(//evil)</style>"
''')
    roots = sampled_tree(tree, hostname=evil)
    _, page, report = audit(roots, tmp_path, rules=("--rules-dir", str(rules)))
    assert report["facts"]["host"]["hostname"] == evil
    assert external_references(page) == []
    for bad in ("<script", "<img", "<iframe", "<b ", "<a ", "@import url(//evil)</style"):
        assert bad not in page
    assert html_escape(evil) in page.replace("&#34;", "&quot;").replace("&#39;", "&#x27;")
    assert "&lt;b onmouseover=alert(2)&gt;bold&lt;/b&gt;" in page


def test_json_to_a_file_is_the_same_document_as_on_stdout(tree, tmp_path):
    roots = tree("nearly-full-drops")
    out = tmp_path / "r.json"
    res = run_cli("audit", *tree_args(roots), "--format", "json", "-o", str(out))
    std = run_cli("audit", *tree_args(roots), "--format", "json")
    assert res.returncode == std.returncode == 2 and res.stdout == ""
    a, b = json.loads(out.read_text()), json.loads(std.stdout)
    a["facts"].pop("collected_at"), b["facts"].pop("collected_at")
    assert a == b


def test_output_with_table_format_is_a_usage_error(tree, tmp_path):
    res = run_cli("audit", *tree_args(tree("nearly-full-drops")), "-o", str(tmp_path / "x"))
    assert res.returncode == 3
    assert "-o/--output: only with --format json or html" in res.stderr
    assert not (tmp_path / "x").exists()


def test_html_without_pygal_exits_3_naming_the_extra(tree, tmp_path):
    roots = tree("nearly-full-drops")
    code = ("import sys; sys.modules['pygal'] = None\n"
            "from ct_tune.cli import main; sys.argv[0] = 'ct-tune'; main()")
    res = subprocess.run([sys.executable, "-c", code, "audit", *tree_args(roots), "--format",
                          "html", "-o", str(tmp_path / "r.html")], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
                         check=False)
    assert res.returncode == 3
    assert res.stderr.strip() == (
        "ct-tune: --format html: the charting library pygal is not installed; install the "
        "'report' extra: pip install 'ct-tune[report]'")
    assert not (tmp_path / "r.html").exists()


def test_window_series_is_thinned_keeping_the_peaks():
    series = [[i / 10, 1000 + (i % 7)] for i in range(10000)]
    series[4321][1] = 99999
    thin = sampler.thin(series, 2000)
    assert len(thin) <= 2000 and [4321 / 10, 99999] in thin
    w = sampler.window_summary([c for _, c in series], None, None, 1000.0,
                               [t for t, _ in series])
    assert w["peak"] == 99999 and len(w["series"]) <= sampler.SERIES_POINTS


# --- the fleet page ----------------------------------------------------------------------

EVIL_HOST = '<script>alert("fleet")</script>'


def fleet_report() -> dict:
    """A report as 'ct-tune fleet --format json' writes it (schema ct-tune-fleet/1)."""
    def finding(fid, sev, param=None, cur=None, rec=None):
        return {"id": fid, "severity": sev, "parameter": param, "current": cur,
                "recommended": rec, "why": f"why {fid} on this host"}
    hosts = [
        {"source": "snaps/db1.json", "host": "db1", "kernel": "6.1.0-18-amd64",
         "status": "critical", "count": 250000, "max": 262144, "usage": 250000 / 262144,
         "findings": [finding("conntrack-max", "critical", "net.netfilter.nf_conntrack_max",
                              262144, 1048576),
                      finding("tcp-timeout-established", "warning", TCP_EST, 432000, 86400)]},
        {"source": "snaps/web1.json", "host": EVIL_HOST, "kernel": "5.10.0-28-amd64",
         "status": "warning", "count": 200000, "max": 262144, "usage": 200000 / 262144,
         "findings": [finding("conntrack-max", "warning", "net.netfilter.nf_conntrack_max",
                              262144, 524288),
                      finding("tcp-timeout-established", "warning", TCP_EST, 432000, 86400)]},
        {"source": "snaps/web2.json", "host": "web2", "kernel": "5.10.0-28-amd64",
         "status": "warning", "count": 1000, "max": 262144, "usage": 1000 / 262144,
         "findings": [finding("tcp-timeout-established", "warning", TCP_EST, 432000, 86400),
                      finding("not-persisted", "ok")]},
        {"source": "snaps/old.json", "host": "old", "kernel": None, "status": "unknown",
         "count": None, "max": None, "usage": None,
         "findings": [finding("conntrack-max", "unknown", "net.netfilter.nf_conntrack_max")]},
        {"source": "snaps/ok1.json", "host": "ok1", "kernel": "6.1.0-18-amd64",
         "status": "ok", "count": 10, "max": 262144, "usage": 10 / 262144,
         "findings": [finding("not-persisted", "ok")]},
    ]
    return {"schema": "ct-tune-fleet/1", "hosts": hosts,
            "skipped": [{"source": "snaps/bad.json",
                         "errors": ["snaps/bad.json: not JSON: line 1"]}],
            "summary": [{"id": "tcp-timeout-established", "severity": "warning", "hosts": 3,
                         "text": "3 hosts: established entries live 5 d"},
                        {"id": "conntrack-max", "severity": "critical", "hosts": 3,
                         "text": "3 hosts: table over 75 % (1 critical), 1 unknown"}]}


def test_fleet_page_summary_overview_and_charts_follow_the_report():
    report = fleet_report()
    page = html_report.render_fleet(report)
    assert external_references(page) == []
    assert "<script" not in page
    assert html_escape(EVIL_HOST) in page.replace("&#34;", "&quot;")
    charts = svgs(page)
    # hosts by usage: one bar per host with a known usage, its usage in %
    usage = charts["chart-fleet-usage"]
    labels = categories(usage)
    plotted = [num(t) for t in values(usage)["serie-0"]]
    expect = {h["host"]: round(100 * h["usage"], 2) for h in report["hosts"]
              if h["usage"] is not None}
    assert dict(zip(labels, plotted, strict=True)) == pytest.approx(expect, abs=0.05)
    # hosts by worst finding: the status counts
    worst = charts["chart-fleet-worst"]
    labels = categories(worst)
    assert dict(zip(labels, [num(t) for t in values(worst)["serie-0"]], strict=True)) == {
        "critical": 1, "warning": 2, "unknown": 1, "ok": 1}
    # the summary table, most hosts first as given
    rows = re.findall(r"<tr><td>([a-z-]+)</td><td><span class=\"sev sev-(\w+)\">", page)
    assert rows == [("tcp-timeout-established", "warning"), ("conntrack-max", "critical")]
    assert "3 hosts: table over 75 % (1 critical), 1 unknown" in page
    # the overview: a row per host, a column per summary finding, the host's severity in it
    table = page[page.index("<h2>Hosts and findings</h2>"):]
    table = table[:table.index("</table>")]
    body = re.findall(r"<tr><td>(.*?)<br>.*?</tr>", table, re.S)
    assert [html_unescape(b) for b in body] == [h["host"] for h in report["hosts"]]
    cells = [re.findall(r'<td class="sev-cell sev-(\w+)"|<td></td>', r)
             for r in re.findall(r"<tr><td>.*?</tr>", table, re.S)]
    assert cells == [["warning", "critical"], ["warning", "warning"], ["warning", ""],
                     ["", "unknown"], ["", ""]]
    assert "snaps/bad.json: not JSON: line 1" in page


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_fleet_page_without_usage_says_so():
    report = fleet_report()
    for h in report["hosts"]:
        h["usage"] = None
    page = html_report.render_fleet(report)
    assert "chart-fleet-usage" not in page
    assert "No host has a known table usage" in page


# --- a real browser ----------------------------------------------------------------------

def png_pixels(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and the unfiltered rows of an 8-bit PNG (RFC 2083)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def screenshot(html_file: Path, out: Path, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp / 'profile'}",
         f"--screenshot={out}", "--window-size=1200,2000", html_file.as_uri()],
        capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install chromium: README's "
                           "test command installs it)")
def test_chromium_renders_the_report_with_its_charts(tree, tmp_path):
    roots = sampled_tree(tree)
    _, page, _ = audit(roots, tmp_path, "--duration", "0.4", "--interval", "0.2")
    html_file = tmp_path / "report.html"
    # the usage chart first, so it is inside the 2000-pixel screenshot
    moved = page.replace("<h2>Findings</h2>", "<h2>Charts first</h2>" + re.search(
        r'<div class="chart"><svg id="chart-usage".*?</svg></div>', page, re.S).group(), 1)
    html_file.write_text(moved)
    out = tmp_path / "shot.png"
    res = screenshot(html_file, out, tmp_path)
    assert out.exists(), res.stderr[-2000:]
    width, height, bpp, rows = png_pixels(out.read_bytes())
    assert (width, height) == (1200, 2000)
    lum = [sum(row[i:i + 3]) // 3 for row in rows[::4] for i in range(0, len(row), bpp * 4)]
    mean = sum(lum) / len(lum)
    variance = sum((v - mean) ** 2 for v in lum) / len(lum)
    dark = sum(v < 128 for v in lum) / len(lum)
    assert variance > 300 and 0.005 < dark < 0.6, (variance, dark)

    # the severity badge's red and the count line's blue: styles and the SVG were drawn
    def near(rgb):
        return sum(1 for row in rows[::2] for i in range(0, len(row), bpp * 2)
                   if all(abs(row[i + k] - rgb[k]) < 40 for k in range(3)))
    assert near((0xc6, 0x28, 0x28)) > 50
    assert near((0x15, 0x65, 0xc0)) > 50


def test_snapshot_values_no_chart_can_show_leave_a_sentence_not_a_traceback(tree, tmp_path):
    """A hand-edited snapshot that still loads: seconds and counts no chart can scale."""
    roots = sampled_tree(tree)
    snap = tmp_path / "snap.json"
    assert run_cli("collect", *tree_args(roots), "-o", str(snap)).returncode == 0
    data = json.loads(snap.read_text())
    data["window"] = sampler.window_summary([5, 7], None, None, 1.0, [1e300, 1e301])
    snap.write_text(json.dumps(data))
    out = tmp_path / "r.html"
    res = run_cli("audit", "--facts", str(snap), "--format", "html", "-o", str(out))
    assert res.returncode == 2 and "internal error" not in res.stderr, res.stderr
    page = out.read_text()
    assert "chart-usage" not in page
    assert "The polling window has no count readings that can be charted" in page
    assert "chart-mix" in page  # the other charts are still drawn
