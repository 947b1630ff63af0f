"""The audit in a terminal: fits the width, colour only on a terminal (never with NO_COLOR),
problems first, a summary that counts what needs action, a sparkline of the window.

Layout is what these tests are about, so they read the text; what the findings say is
asserted on --format json elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli, tree_args

from ct_tune import termtable, units
from ct_tune.findings import Finding

SGR = re.compile(r"\x1b\[[0-9;]*m")
PLAIN = {"NO_COLOR": "", "TERM": "xterm"}


def _audit(roots, *extra: str, columns: int | None = 80, env: dict | None = None):
    e = {**PLAIN, **({"COLUMNS": str(columns)} if columns else {"COLUMNS": ""}), **(env or {})}
    return run_cli("audit", *tree_args(roots), *extra, env=e)


def _json(roots) -> dict:
    return json.loads(run_cli("audit", "--format", "json", *tree_args(roots)).stdout)


@pytest.mark.parametrize("columns", [60, 80, 200])
@pytest.mark.parametrize("host", ["nearly-full-drops", "corrupt-values", "defaults-16g",
                                  "kube-proxy-1.30-flags"])
@pytest.mark.parametrize("extra", [(), ("--all",), ("--explain",), ("--color", "always")])
def test_no_line_is_longer_than_the_terminal(tree, columns, host, extra):
    proc = _audit(tree(host), *extra, columns=columns)
    assert proc.returncode in (0, 1, 2, 3), proc.stderr
    lines = SGR.sub("", proc.stdout).splitlines()
    too_long = [line for line in lines if len(line) > columns]
    assert too_long == []
    assert any(line.startswith("status: ") for line in lines)


def test_wide_terminal_has_columns_and_the_why_wraps_inside_its_cell(tree):
    proc = _audit(tree("nearly-full-drops"), columns=200)
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["severity", "parameter", "current", "recommended", "why"]
    why_at = lines[0].index("why")
    rows = [line for line in lines[2:] if line and not line.startswith(("status:", " "))]
    # problems first: critical, warning, then info
    sevs = [r.split()[0] for r in rows]
    assert sevs == sorted(sevs, key=termtable.SHOWN_ORDER.index)
    assert sevs[0] == "critical" and "ok" not in sevs
    # a continuation line of a long why starts in the why column, blank before it
    cont = [line for line in lines[2:] if line.startswith(" ") and line.strip()]
    assert cont and all(len(line) - len(line.lstrip()) == why_at for line in cont)
    # the row of the established timeout shows both values as durations
    row = next(r for r in rows if "tcp_timeout_established" in r)
    assert "432,000 s (5 d)" in row and "86,400 s (1 d)" in row


def test_narrow_terminal_stacks_each_finding(tree):
    text = _audit(tree("nearly-full-drops"), columns=60).stdout
    blocks = text.split("\n\n")
    assert blocks[0].startswith("critical  net.netfilter.nf_conntrack_max\n"
                                "          262,144 -> 1,048,576\n")
    # numbers stay with their units when the why wraps ("5 d", never "5" / "d")
    for line in text.splitlines():
        assert not re.match(r"^ +(d|h|min|s|MiB|GiB|%)\b", line), line


def test_ok_rows_only_with_all_and_the_summary_counts_by_severity(tree):
    roots = tree("nearly-full-drops")
    report = _json(roots)
    by = {s: sum(f["severity"] == s for f in report["findings"])
          for s in termtable.SHOWN_ORDER}
    assert by["ok"] > 0 and by["critical"] > 0
    default = _audit(roots, columns=200).stdout
    everything = _audit(roots, "--all", columns=200).stdout
    rows = [line for line in default.splitlines()[2:] if line[:1].isalpha()
            and not line.startswith("status")]
    assert len(rows) == len(report["findings"]) - by["ok"]
    all_rows = [line for line in everything.splitlines()[2:] if line[:1].isalpha()
                and not line.startswith("status")]
    assert len(all_rows) == len(report["findings"])
    assert [r.split()[0] for r in all_rows][-by["ok"]:] == ["ok"] * by["ok"]
    status = default.splitlines()[-1]
    counted = ", ".join(f"{by[s]} {s}" for s in ("critical", "warning", "unknown", "info")
                        if by[s])
    assert status == (f"status: CRITICAL - {counted}; {by['ok']} checks ok (not shown; "
                      "--all shows them); profile default")
    assert everything.splitlines()[-1] == (f"status: CRITICAL - {counted}; {by['ok']} "
                                           "checks ok; profile default")


def test_a_healthy_host_says_no_findings_not_seven(tree):
    # "status: OK (7 findings" once counted the checks that passed as findings
    roots = tree("defaults-16g")
    proc = _audit(roots, columns=200)
    report = _json(roots)
    last = proc.stdout.splitlines()[-1]
    info = sum(f["severity"] == "info" for f in report["findings"])
    ok = sum(f["severity"] == "ok" for f in report["findings"])
    assert last.startswith(f"status: {report['status'].upper()} - ")
    assert f"{ok} checks ok (not shown" in last
    assert ("no findings" in last) == (info == 0 and report["status"] == "ok")


def test_input_problems_and_unknown_in_the_summary(tree):
    proc = _audit(tree("corrupt-values"), columns=200)
    last = proc.stdout.splitlines()[-1]
    assert last.startswith("status: UNKNOWN - ")
    assert re.search(r"\d+ unknown", last) and "1 input problem (on stderr)" in last


# -- colour ------------------------------------------------------------------------------


def test_color_always_never_and_piped(tree):
    roots = tree("nearly-full-drops")
    assert "\x1b[1;31mcritical\x1b[0m" in _audit(roots, "--color", "always").stdout
    assert "\x1b[" not in _audit(roots, "--color", "never").stdout
    assert "\x1b[" not in _audit(roots).stdout  # auto, stdout a pipe
    # --color always is the user's explicit choice: it beats NO_COLOR (no-color.org)
    assert "\x1b[" in _audit(roots, "--color", "always", env={"NO_COLOR": "1"}).stdout


def _in_pty(args: list[str], env: dict[str, str], columns: int = 100) -> str:
    """Run ct-tune with stdout a real pseudo-terminal of `columns` columns."""
    import fcntl
    import struct
    import termios

    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR")}
    full_env.update({"PYTHONPATH": str(ROOT), "TERM": "xterm", **env})
    proc = subprocess.Popen([sys.executable, "-m", "ct_tune", *args], stdout=secondary,
                            stderr=subprocess.DEVNULL, env=full_env)
    os.close(secondary)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(primary)
        proc.wait(timeout=60)
    return out.decode().replace("\r\n", "\n")


def test_color_auto_on_a_real_terminal_and_its_width(tree):
    args = ["audit", *tree_args(tree("nearly-full-drops"))]
    text = _in_pty(args, {}, columns=100)
    assert "\x1b[1;31mcritical\x1b[0m" in text
    assert "\x1b[1;31mCRITICAL\x1b[0m" in text  # the status too
    # no COLUMNS: the width is the terminal's own
    assert max(len(line) for line in SGR.sub("", text).splitlines()) <= 100
    assert any(len(line) > 80 for line in SGR.sub("", text).splitlines())


@pytest.mark.parametrize("value", ["1", "yes", "0"])
def test_no_color_on_a_terminal_means_no_colour(tree, value):
    # any non-empty NO_COLOR (even "0") disables colour; --color auto is the default
    text = _in_pty(["audit", *tree_args(tree("nearly-full-drops"))], {"NO_COLOR": value})
    assert "\x1b[" not in text and "critical" in text


def test_empty_no_color_is_unset(tree):
    text = _in_pty(["audit", *tree_args(tree("nearly-full-drops"))], {"NO_COLOR": ""})
    assert "\x1b[" in text


def test_dumb_terminal_gets_no_colour(tree):
    text = _in_pty(["audit", *tree_args(tree("nearly-full-drops"))], {"TERM": "dumb"})
    assert "\x1b[" not in text


# -- explain -----------------------------------------------------------------------------


def test_explain_evidence_in_units_without_nulls_and_ends_with_the_status(tree):
    roots = tree("nearly-full-drops")
    report = _json(roots)
    text = _audit(roots, "--explain", columns=None).stdout
    evidence = [line for line in text.splitlines() if re.match(r"  \w+ = ", line)]
    assert evidence and not [e for e in evidence if re.search(r"= (null|None|none)$", e)]
    assert not re.search(r"= -?\d+\.\d{4,}", text)  # no raw floats
    cm = next(f for f in report["findings"] if f["rule"] == "conntrack-max")
    assert isinstance(cm["evidence"]["budget"], float)
    assert cm["evidence"]["peak"] is None  # in JSON, as it was
    block = text.split("[CRITICAL] conntrack-max")[1].split("\n\n[")[0]
    budget = cm["evidence"]["budget"]
    assert f"  budget = {budget / 2**20:.1f} MiB\n" in block
    assert "  peak =" not in block  # not sampled: left out
    assert f"  use = {cm['evidence']['use'] * 100:.1f} %\n" in block
    te = text.split("tcp-timeout-established:")[1]
    assert "  ka_window = 7,875 s (2 h 11 min)\n" in te
    assert "  forwarded = yes\n" in te
    assert text.rstrip("\n").splitlines()[-1].startswith(
        f"status: {report['status'].upper()} - ")


def test_explain_wraps_to_the_terminal_but_not_into_a_pipe(tree):
    roots = tree("nearly-full-drops")
    piped = _audit(roots, "--explain", columns=None).stdout
    assert max(len(line) for line in piped.splitlines()) > 200  # a paragraph is one line
    narrow = _audit(roots, "--explain", columns=72).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 72
    # the same words, only re-flowed
    assert ("".join(narrow.split()).replace("=", "")
            == "".join(piped.split()).replace("=", ""))


# -- units and sparkline (pure) ----------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (30, "30 s"), (59, "59 s"), (60, "60 s (1 min)"), (7875, "7,875 s (2 h 11 min)"),
    (432000, "432,000 s (5 d)"), (0, "0 s")])
def test_one_duration_format(seconds, text):
    assert units.duration(seconds) == text
    assert units.value("net.netfilter.nf_conntrack_udp_timeout", seconds) == text
    assert units.with_unit(seconds, "seconds") == text


@pytest.mark.parametrize(("v", "unit", "text"), [
    (1263825510.4, "bytes", "1.2 GiB"), (256, "bytes", "256 B"), (0.957, "ratio", "95.7 %"),
    (0.0004, "ratio", "0.04 %"), (12941.464049, None, "12,941"), (30.517578, None, "30.5"),
    (True, None, "yes"), (None, None, "none"), (2.0, None, "2"),
    ({"sets": 7200, "mode": "raise", "undoes": None}, None, "sets 7,200; mode raise"),
    ({"timeout": 600, "share": 0.95, "entries_margin": 0, "top_dports": [[20301, 2, 0],
      [53, 1200, 40]]}, None, "timeout 600 s (10 min); share 95 %; top_dports 20301 x 2, "
     "53 x 1,200 +- 40")])
def test_evidence_values(v, unit, text):
    assert units.with_unit(v, unit) == text


def test_sparkline_follows_the_values_and_fits():
    line = termtable.sparkline([0, 1, 2, 3, 4, 5, 6, 7], 20)
    assert line == "▁▂▃▄▅▆▇█"
    assert termtable.sparkline([5, 5, 5], 10) == "▁▁▁"
    long = list(range(1000))
    assert len(termtable.sparkline(long, 50)) == 50
    # a one-poll spike survives the thinning
    spiky = [10] * 500 + [1000] + [10] * 499
    assert "█" in termtable.sparkline(spiky, 30)
    assert termtable.sparkline([0, 7], 5, utf8=False) == "_@"


def test_window_line_fits_the_width_and_falls_back_to_ascii():
    window = {"seconds": 60.0, "series": [[i, 1000 + 10 * i] for i in range(61)]}
    for columns in (40, 60, 80, 200):
        line = termtable.window_line(window, termtable.Style(width=columns))
        assert line is not None and len(line) <= columns
        assert line.endswith(" 1,000..1,600")
    assert termtable.window_line(window, termtable.Style(width=80)).startswith(
        "count over 60 s (1 min): ▁")
    ascii_line = termtable.window_line(window, termtable.Style(width=80, utf8=False))
    assert ascii_line.isascii() and "@" in ascii_line
    assert termtable.window_line({"seconds": 1, "polls": 2, "peak": 3}, termtable.Style()) \
        is None


def test_audit_text_shows_the_sparkline_before_the_summary():
    from ct_tune import render

    f = Finding(rule="x", title="X", severity="warning", parameter=None, current=None,
                recommended=None, summary="something", explanation="e")
    facts = {"errors": [], "window": {"seconds": 3, "series": [[0, 1], [1, 5], [2, 3]]}}
    text = render.audit_text([f], facts, "warning", "default", termtable.Style(width=60))
    assert text.splitlines()[-3:] == ["count over 3 s: ▁█▅ 1..5", "",
                                      "status: WARNING - 1 warning; profile default"]


def test_unknown_findings_say_not_assessed_in_the_narrow_layout(tree):
    roots = tree("corrupt-values")
    report = _json(roots)
    buckets = next(f for f in report["findings"] if f["rule"] == "hash-buckets")
    assert buckets["severity"] == "unknown"
    text = _audit(roots, columns=60).stdout
    block = next(b for b in text.split("\n\n")
                 if b.startswith("unknown   net.netfilter.nf_conntrack_buckets"))
    assert block.splitlines()[1] == f"          {buckets['current']:,} (not assessed)"


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_duration_window_shows_a_sparkline_of_the_count(tree, tmp_path, columns):
    """A snapshot whose polling window rose and fell: its sparkline follows the counts and
    fits the width; UTF-8 block characters, ASCII where stdout is not UTF-8."""
    roots = tree("nearly-full-drops")
    snap = json.loads(run_cli("collect", "--no-sample", *tree_args(roots)).stdout)
    counts = [1000, 2000, 4000, 8000, 4000, 2000, 1000, 1000]
    snap["window"] = {"seconds": 7.0, "polls": len(counts), "peak": max(counts),
                      "mean": sum(counts) / len(counts), "growth": 0, "rates": {},
                      "series": [[float(i), c] for i, c in enumerate(counts)]}
    path = tmp_path / "host.json"
    path.write_text(json.dumps(snap))
    out = run_cli("audit", "--facts", str(path),
                  env={**PLAIN, "COLUMNS": str(columns), "PYTHONIOENCODING": "utf-8"}).stdout
    line = next(x for x in out.splitlines() if x.startswith("count over "))
    assert line == "count over 7 s: ▁▂▄█▄▂▁▁ 1,000..8,000"
    assert max(len(x) for x in out.splitlines()) <= columns
    ascii_out = run_cli("audit", "--facts", str(path),
                        env={**PLAIN, "COLUMNS": str(columns), "PYTHONIOENCODING": "ascii"})
    assert "\ncount over 7 s: _.=@=.__ 1,000..8,000\n" in ascii_out.stdout


@pytest.mark.parametrize("columns", [60, 72, 80, 100, 200])
def test_a_key_name_in_the_why_is_never_cut_in_two(columns):
    """At 80 columns the why column was 30 wide and cut 'nf_conntrack_tcp_timeout_
    established' as 'nf_conntr' / 'ack_tcp_...': a word longer than the column stacks the
    findings instead."""
    key = "nf_conntrack_tcp_timeout_established"
    shown = [Finding(rule="not-persisted", title="T", severity="info", parameter=None,
                     current=None, recommended=None, explanation="e",
                     summary=f"1 live value would be lost with this namespace ({key} "
                             "86,400): a new namespace starts from the defaults"),
             Finding(rule="netns-readonly", title="T", severity="info", parameter=None,
                     current=None, recommended=None, explanation="e",
                     summary="container network namespace: max and buckets are global")]
    text = termtable.table(shown, termtable.Style(width=columns))
    assert key in text
    assert all(len(line) <= columns for line in text.splitlines())
    if columns >= 100:  # room for it: still columns
        assert text.splitlines()[0].startswith("severity")
