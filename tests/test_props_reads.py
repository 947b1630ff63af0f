"""Any bytes as a conntrack table dump: both parsers (line by line, and blocks through the
table reader) count every line as an entry or as malformed, agree, never raise, and take
time linear in the input (lines that once took a minute run under a short timeout here).
Plus the procfs value parsers: numbers too long for int() are a ValueError like any other
bad value, never a different exception."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, run_cli, tree_args
from hypothesis import given, settings
from hypothesis import strategies as st
from test_flowblocks import TIMEOUTS
from test_flowparse import entries

from ct_tune import ctsource, parsers
from ct_tune.flowparse import MAX_LINE
from ct_tune.flows import FlowStats

HEAD = "ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 "
GOOD = (HEAD + "src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [ASSURED] mark=0 use=1\n")
#: An 800 KB line with no " use=" after its " [X] mark=" and " zone=" tokens: the block
#: regex once retried every earlier one of them (61 s for such a line).
NO_USE = HEAD + "[ASSURED] mark=0 zone=5 " * (800_000 // 24) + "\n"
#: A 2 MB line of digits: far past Python's 4300-digit int() limit.
DIGITS = "1" * 2_000_000 + "\n"
#: A plain entry but for its 5000-digit timeout (an internal error in the block path once).
BIG_TTL = GOOD.replace(" 431999 ", f" {'9' * 5000} ")


def _text_lines(data: bytes) -> list[str]:
    """The lines a text-mode read of the dump gives (UTF-8, errors replaced, universal
    newlines), as ct-tune's reader decodes it."""
    return list(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace"))


def _by_lines(data: bytes, every: int = 1) -> FlowStats:
    stats = FlowStats(TIMEOUTS, every)
    stats.feed(_text_lines(data))
    return stats


def _by_blocks(data: bytes, size: int = ctsource.BLOCK_CHARS, every: int = 1) -> FlowStats:
    stats = FlowStats(TIMEOUTS, every)
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")
    stats.feed_blocks(ctsource._blocks(text, size))
    return stats


def _summary(stats: FlowStats) -> str:
    out = stats.summary()
    out.pop("malformed_examples")  # quotes of an over-long line are cut by the reader
    for kind in out["malformed_kinds"]:
        kind.pop("example")
    return json.dumps(out)


def _nonblank(data: bytes) -> int:
    return sum(1 for line in _text_lines(data) if line.strip())


def test_pathological_lines_are_malformed_within_a_short_timeout():
    """Both parsers in a child process with a 10 s timeout (the block parser took 61 s on
    the 800 KB line alone; the 5000-digit timeout raised): each long line is one
    malformed line, the good ones count."""
    script = textwrap.dedent(f"""
        import io, json, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_props_reads import GOOD, BIG_TTL, NO_USE, DIGITS, _by_lines, _by_blocks
        data = (GOOD + BIG_TTL + GOOD + NO_USE + GOOD + DIGITS + GOOD).encode()
        out = [(s.entries, s.malformed) for s in (_by_lines(data), _by_blocks(data))]
        print(json.dumps(out))
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=10, check=True, cwd=ROOT)
    assert json.loads(proc.stdout) == [[4, 3], [4, 3]]


def test_a_line_that_never_ends_is_read_in_bounded_memory():
    """20 MB without a newline (what a NUL-filled dump gives): the reader passes on one
    cut line and never holds more than a block plus one line."""
    size = 1 << 16
    text = io.StringIO(GOOD + "\0" * 20_000_000)
    blocks = list(ctsource._blocks(text, size))
    assert max(map(len, blocks)) <= size + MAX_LINE + 2
    stats = FlowStats(TIMEOUTS)
    stats.feed_blocks(blocks)
    assert (stats.entries, stats.malformed) == (1, 1)


def test_a_table_dump_with_an_800_kb_line_through_the_cli(tree):
    roots = tree("defaults-16g")
    roots.proc("net/nf_conntrack").write_text(GOOD * 3 + NO_USE + GOOD)
    proc = run_cli("collect", *tree_args(roots), timeout=20)
    assert proc.returncode == 0, proc.stderr
    flows = json.loads(proc.stdout)["flows"]
    assert (flows["entries_read"], flows["malformed"]) == (4, 1)


def _line_at(n: int) -> st.SearchStrategy[bytes]:
    return st.builds(lambda c, k: c * k, st.sampled_from([b"1", b" ", b"a", b"\0", b"\xff",
                                                         b"[A] mark=0 ", b" zone=7"]),
                     st.integers(n // 11, n))


#: Pieces of a dump: real entries, entries with junk spliced in, raw bytes, lines around
#: MAX_LINE and far beyond it, every kind of line end.
piece = st.one_of(
    entries().map(lambda e: e[0].encode()),
    st.tuples(entries(), st.binary(max_size=40), st.integers(0, 200)).map(
        lambda t: t[0][0].encode()[:t[2]] + t[1] + t[0][0].encode()[t[2]:]),
    st.binary(max_size=300),
    _line_at(MAX_LINE + 60),
    _line_at(3 * MAX_LINE),
    st.builds(lambda e, k: e[0].rstrip("\n").encode() + b" " * k + b"\n", entries(),
              st.integers(MAX_LINE - 400, MAX_LINE + 10)),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"   \n", b"\x0c\n"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(piece, max_size=25), st.sampled_from([64, 1000, MAX_LINE + 1, 1 << 18]),
       st.sampled_from([1, 1, 2, 3]))
def test_any_bytes_as_a_table_dump(pieces, size, every):
    """Also parsed from every k-th line: the reader keeps every line a line (an over-long
    blank one too), so both pick the same lines."""
    data = b"".join(pieces)
    lines, blocks = _by_lines(data, every), _by_blocks(data, size, every)
    if every == 1:
        assert lines.entries + lines.malformed == _nonblank(data)
    assert lines.lines == len(_text_lines(data))
    assert _summary(blocks) == _summary(lines)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.builds(
    lambda a, n, b: a + "9" * n + b, st.text(max_size=20), st.integers(4000, 6000),
    st.text(max_size=20))))
def test_value_parsers_raise_only_value_error(text):
    for parse in (parsers.parse_int, parsers.parse_meminfo, parsers.parse_cpu_list,
                  parsers.parse_uptime, parsers.parse_slabinfo, parsers.parse_conntrack_stat,
                  parsers.parse_sysctl_value, parsers.parse_kernel_version):
        with contextlib.suppress(ValueError):
            parse(text)


@pytest.mark.parametrize(("parse", "text"), [
    (parsers.parse_int, "9" * 5000),
    (parsers.parse_meminfo, f"MemTotal: {'9' * 5000} kB\n"),
    (parsers.parse_cpu_list, "0-" + "9" * 5000),
    (parsers.parse_slabinfo, f"nf_conntrack 1 1 {'9' * 5000} 1\n"),
])
def test_a_5000_digit_number_is_too_long(parse, text):
    with pytest.raises(ValueError, match=r"^number too long \(5000 digits\)$"):
        parse(text)


def test_a_5000_digit_sysctl_names_the_file(tree):
    roots = tree("defaults-16g")
    path = roots.proc("sys/net/netfilter/nf_conntrack_max")
    path.write_text("9" * 5000 + "\n")
    proc = run_cli("audit", "--no-sample", *tree_args(roots), timeout=20)
    assert proc.returncode == 3
    assert proc.stderr == f"ct-tune: {path}: number too long (5000 digits)\n"


def test_a_cpu_list_of_huge_overlapping_ranges_stays_small():
    assert parsers.parse_cpu_list(",".join(["0-65535"] * 4000)) == list(range(65536))
    with pytest.raises(ValueError, match="beyond"):
        parsers.parse_cpu_list("0-99999999999")


def test_an_over_long_line_blank_at_its_start_is_still_one_malformed_line():
    """Found by the property above: 4,097 spaces then digits, read in 1000-byte blocks,
    was dropped as a blank line by the block path while the line parser counted it."""
    data = b" " * 4097 + b"1" * 377
    assert _summary(_by_blocks(data, 1000)) == _summary(_by_lines(data))
