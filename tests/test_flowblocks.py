"""The block path (scan_block, FlowStats.feed_blocks, ctsource.table_blocks) against the
line-by-line one: the same text must give the same summary, to the last lossy count."""

from __future__ import annotations

import io
import json
import pathlib
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_flowparse import entries

from ct_tune.flowparse import block_lines, scan_block, scan_line
from ct_tune.flows import FlowStats

TIMEOUTS = {"nf_conntrack_tcp_timeout_established": 432000, "nf_conntrack_udp_timeout": 30,
            "nf_conntrack_udp_timeout_stream": 120, "nf_conntrack_icmp_timeout": 30,
            "nf_conntrack_generic_timeout": 600}


def by_lines(text: str, limit: int | None = None, every: int = 1) -> dict:
    """The reference: the lines a text-mode file gives, fed one by one."""
    stats = FlowStats(TIMEOUTS, every)
    stats.feed(io.StringIO(text, newline=None), limit=limit)
    return stats.summary(total=10**6 if limit else None)


def by_blocks(blocks: list[str], limit: int | None = None, every: int = 1) -> dict:
    stats = FlowStats(TIMEOUTS, every)
    stats.feed_blocks(blocks, limit=limit)
    return stats.summary(total=10**6 if limit else None)


def split_blocks(text: str, cuts: list[int]) -> list[str]:
    """Blocks of whole lines, cut after the given line numbers (the last may lack "\\n")."""
    lines = block_lines(text)
    out, start = [], 0
    for cut in [*sorted({c % (len(lines) + 1) for c in cuts}), len(lines)]:
        if cut > start:
            out.append("".join(lines[start:cut]))
            start = cut
    return out


def same(a: dict, b: dict) -> None:
    assert json.dumps(a) == json.dumps(b)  # key order too: it is the JSON output


#: Edits that make a line one a fast path could get wrong; most keep it well formed.
PERTURB = [
    lambda line, r: line.replace(" sport=", r.choice(["\t", "\xa0", "\x85", "\u2003", "\x1f"])
                                 + "sport=", 1),             # whitespace \s takes, " " not
    lambda line, r: line.replace(" use=", f" zone={r.choice([0, 7, 65535, 70000])} use="),
    lambda line, r: line.replace(" use=", " zone=0 use=").replace(" mark=", " zone=5 mark="),
    lambda line, r: line.replace(" mark=", f" [{r.choice(['ASSURED', 'X', '[OFFLOAD'])}] mark="),
    lambda line, r: line.replace(" src=", " [ASSURED] src=", 1),
    lambda line, r: line.replace("dport=", r.choice(["dport=9", "dport=0", "dport=6553"]), 1),
    lambda line, r: line[: r.randrange(len(line))] + "\n",    # truncated
    lambda line, r: line.replace("src=", "src=\u00e9", 1),    # not ASCII
    lambda line, r: line.replace("dport=", "dport=\u0663", 1),  # a digit \d takes, not ASCII
    lambda line, r: line.replace(" use=", " use=1 use="),
    lambda line, r: line.replace(" use=", " use"),
    lambda line, r: line.replace("\n", "\r\n"),
    lambda line, r: line.replace("\n", "\r"),
    lambda line, r: line.replace("\n", "\x0c\n"),
    lambda line, r: line.replace(" ", "  ", 1 + r.randrange(4)),
    lambda line, r: "\n",
    lambda line, r: "   \n",
    lambda line, r: re.sub(r" sport=\d+ dport=\d+", "", line),  # a port-less tcp/udp line
    lambda line, r: line.replace("ipv4", "ipv6", 1),
]


def make_text(mix: list, seed: int) -> str:
    """Well-formed lines in the kernel's single-space form, some edited; as a text-mode
    file gives them (universal newlines)."""
    rnd = random.Random(seed)
    lines = []
    for (entry, _), how in mix:
        line = re.sub(" +", " ", entry) if how % 4 else entry
        if how < len(PERTURB):
            line = PERTURB[how](line, rnd)
        lines.append(line)
    return io.StringIO("".join(lines), newline=None).read()


line_mix = st.lists(st.tuples(entries(), st.integers(0, 4 * len(PERTURB))), min_size=1,
                    max_size=40)


@settings(max_examples=400, deadline=None)
@given(line_mix, st.lists(st.integers(0, 60), max_size=6), st.integers(0, 2**32),
       st.booleans(), st.none() | st.integers(1, 45), st.sampled_from([1, 1, 2, 3, 7]))
def test_blocks_aggregate_exactly_like_lines(mix, cuts, seed, last_newline, limit, every):
    """Also with ports and addresses counted from every k-th entry only: the same entries
    whichever way the blocks are cut."""
    text = make_text(mix, seed)
    if not last_newline:
        text = text.rstrip("\n")
    same(by_blocks(split_blocks(text, cuts), limit, every), by_lines(text, limit, every))


@pytest.mark.parametrize("how", range(len(PERTURB)))
def test_each_odd_line_among_plain_ones(how):
    """One edited line in a block of plain kernel lines: the case a whole-block check
    must catch (a hypothesis mix rarely has a block that is plain but for one line)."""
    base = block_lines(kernel_like_table(200, seed=how, zones=how % 2 == 1))
    for seed in range(25):
        rnd = random.Random(seed)
        lines = list(base)
        i = rnd.randrange(len(lines))
        lines[i] = PERTURB[how](lines[i], rnd)
        text = io.StringIO("".join(lines), newline=None).read()
        same(by_blocks([text]), by_lines(text))


def test_one_class_with_portless_lines():
    """A block whose lines all land in one (class, idle bin) table, some without ports."""
    line = ("ipv4     2 udp      17 30 src=10.0.0.1 dst=10.0.0.{n} sport=5 dport={p} [UNREPLIED] "
            "src=10.0.0.2 dst=10.0.0.1 sport=9 dport=5 mark=0 use=2\n")
    lines = [line.format(n=i % 7, p=i % 300) for i in range(400)]
    for i in range(0, 400, 9):
        lines[i] = re.sub(r" sport=\d+ dport=\d+", "", lines[i])
    text = "".join(lines)
    assert scan_block(text) is not None
    same(by_blocks([text]), by_lines(text))


def test_prune_keeps_what_heapq_nlargest_kept():
    """_prune must keep the same keys in the same order as the heapq version it replaced."""
    import heapq
    from collections import Counter

    from ct_tune.flows import _prune

    rnd = random.Random(5)
    for _ in range(300):
        items = [(str(rnd.randrange(400)), rnd.randrange(1, 6)) for _ in range(rnd.randrange(300))]
        a, b = Counter(), Counter()
        for k, c in items:
            a[k] += c
            b[k] += c
        keep = rnd.randrange(1, 80)
        _prune(a, keep)
        top = heapq.nlargest(keep, b.items(), key=lambda kv: kv[1])
        b.clear()
        b.update(dict(top))
        assert list(a.items()) == list(b.items())


@settings(max_examples=300, deadline=None)
@given(entries())
def test_scan_block_agrees_with_scan_line(case):
    line, _ = case
    cols = scan_block(line)
    if cols is None:  # odd spacing the block regex leaves to scan_line: nothing to compare
        return
    l3, l4, state, ttl, dst, dport, bits, zone = scan_line(line)
    row = [c[0] for c in cols[:8]]
    assert (row[0], row[1], row[2] or None, int(row[3]), row[4], row[5] or None) == (
        l3, l4, state, ttl, dst, dport)
    flags = {"UNREPLIED": 1, "ASSURED": 2, "OFFLOAD": 4, "HW_OFFLOAD": 8}
    assert flags.get(row[6], 0) | flags.get(row[7], 0) == bits
    assert (int(cols.zone[0]) if cols.zone else 0) == zone


def kernel_like_table(n: int, seed: int, zones: bool = False) -> str:
    """n lines as the kernel prints them, enough distinct addresses and ports that the
    capped tables prune many times (order-dependent: the hard case for blocks)."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        dst = f"10.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(40)}"
        zone = f"zone={rnd.choice([0, 0, 0, 3, 9])} " if zones else "zone=0 "
        kind = rnd.randrange(5)
        if kind == 0:
            line = (f"ipv4     2 tcp      6 {rnd.randrange(432000)} ESTABLISHED src=10.9.0.1 "
                    f"dst={dst} sport={rnd.randrange(1024, 65536)} "
                    f"dport={rnd.choice([443, 80, 22])} "
                    f"src={dst} dst=10.9.0.1 sport=443 dport=40000 [ASSURED] mark=0 {zone}use=2")
        elif kind in (1, 2):
            unrep = "[UNREPLIED] " if kind == 1 else ""
            line = (f"ipv4     2 udp      17 {rnd.randrange(31)} src=10.9.0.1 dst={dst} "
                    f"sport=53 dport={rnd.randrange(65536)} {unrep}src={dst} dst=10.9.0.1 "
                    f"sport=9 dport=53 mark=0 {zone}use=2")
        elif kind == 3:
            line = (f"ipv6     10 icmpv6   58 {rnd.randrange(31)} src=fe80::1 dst=fe80::{dst[3:5]} "
                    f"type=128 code=0 id={rnd.randrange(65536)} [UNREPLIED] src=fe80::2 "
                    f"dst=fe80::1 type=129 code=0 id=7 mark=0 {zone}use=2")
        else:
            line = (f"ipv4     2 udp      17 {rnd.randrange(121)} src=10.9.0.1 dst={dst} "
                    f"sport=5000 dport={rnd.randrange(65536)} packets=3 bytes=99 src={dst} "
                    f"dst=10.9.0.1 sport=9 dport=5000 packets=1 bytes=60 [ASSURED] mark=0 "
                    f"{zone}delta-time=5 use=2")
        out.append(line + "\n")
    return "".join(out)


@pytest.mark.parametrize("zones", [False, True])
@pytest.mark.parametrize("block_lines_n", [1, 7, 1000, 40000])
def test_pruning_happens_at_the_same_entries(zones, block_lines_n):
    text = kernel_like_table(30000, seed=block_lines_n, zones=zones)
    lines = block_lines(text)
    blocks = ["".join(lines[i:i + block_lines_n]) for i in range(0, len(lines), block_lines_n)]
    ref = by_lines(text)
    assert ref["top_dsts_approximate"] is True  # > 2 * TOP_ADDRS_CAP distinct addresses
    same(by_blocks(blocks), ref)
    same(by_blocks(blocks, limit=12345), by_lines(text, limit=12345))
    same(by_blocks(blocks, every=3), by_lines(text, every=3))


def test_kernel_lines_take_the_block_path():
    """The plain kernel format, zones and accounting included, must not fall back."""
    for zones in (False, True):
        text = kernel_like_table(2000, seed=1, zones=zones)
        cols = scan_block(text)
        assert cols is not None and len(cols.l4) == 2000
        assert (cols.zone is not None) == zones


# --- the fast path must stay the path: every format through both, and the common ones
# must not fall back (speed is measured by benchmarks/sampling.py, not here) -------------

DATE = st.sampled_from(["Thu Feb 17 17:41:18 2011", "Sun Nov 29 09:58:01 2026"])


@st.composite
def every_format(draw):
    """A line of entries() rewritten as one of the forms the printers have produced
    (flowparse's docstring lists them; tests/fixtures/formats has one file of each)."""
    line, want = draw(entries())
    line = line.rstrip("\n")
    form = draw(st.sampled_from(["plain", "offload", "gre-old", "ktimestamp", "after-use",
                                 "zone-dir", "secmark"]))
    if form == "offload":  # no timeout, no state, the offload flag where [ASSURED] goes
        head = re.match(r"((?:ipv[46] +\d+ +)?\S+ +\d+) +\d+ +(?:[A-Z][A-Z_0-9]* +)?", line)
        line = head.group(1) + " " + line[head.end():]
        line = re.sub(r" \[(ASSURED|OFFLOAD|HW_OFFLOAD)\]", "", line)
        flag = draw(st.sampled_from(["OFFLOAD", "HW_OFFLOAD"]))
        line = line.replace(" mark=", f" [{flag}] mark=", 1)
    elif form == "gre-old" and want["l4"] == "gre":
        t = draw(st.integers(0, 10**5))
        line = re.sub(r"( \d+) src=", rf"\1 timeout={t}, stream_timeout={t * 6} src=", line,
                      count=1)
        line = line.replace("sport=", "srckey=0x").replace("dport=", "dstkey=0x")
    elif form == "ktimestamp":
        line = line.replace(" use=", f" [start={draw(DATE)}] use=")
        if draw(st.booleans()):
            line = line.replace(" use=", f" [stop={draw(DATE)}] use=")
    elif form == "after-use":
        line += draw(st.sampled_from([" id=2845103104", " zone=7", " labels=0x1"]))
    elif form == "zone-dir":
        line = re.sub(r"( dst=\S+(?: \w+=\S+)*?)( \[UNREPLIED\])? src=", r"\1 zone-orig=5\2 src=",
                      line, count=1)
    elif form == "secmark":
        line = line.replace(" use=", " secmark=0 use=")
    return line + "\n"


@settings(max_examples=500, deadline=None)
@given(st.lists(every_format(), min_size=1, max_size=30),
       st.lists(st.integers(0, 40), max_size=5))
def test_fast_and_slow_paths_agree_on_every_format(lines, cuts):
    """The block scanner (fast) and scan_line (slow), line by line and as blocks cut
    anywhere, give the same summary for lines of every format."""
    text = "".join(lines)
    same(by_blocks(split_blocks(text, cuts)), by_lines(text))
    for line in lines:
        cols = scan_block(line)
        if cols is not None:
            l3, l4, state, ttl, dst, dport, bits, zone = scan_line(line)
            row = [c[0] for c in cols[:8]]
            assert (row[0], row[1], row[2] or None, int(row[3]) if row[3] else None, row[4],
                    row[5] or None) == (l3, l4, state, ttl, dst, dport)
            names = {"UNREPLIED": 1, "ASSURED": 2, "OFFLOAD": 4, "HW_OFFLOAD": 8}
            assert names.get(row[6], 0) | names.get(row[7], 0) == bits
            assert (int(cols.zone[0]) if cols.zone else 0) == zone


FORMATS = pathlib.Path(__file__).parent / "fixtures" / "formats"
#: The forms the block scanner must take whole: the kernel's, old kernels', and conntrack -L's
#: default output (with ktimestamp dates, ids or zones after use= it may decline).
BLOCK_PATH_FILES = ["procfs-offload.txt", "procfs-gre-old.txt", "procfs-ip_conntrack-old.txt",
                    "ctl-offload.txt", "ctl-sctp-dccp.txt"]


@pytest.mark.parametrize("name", BLOCK_PATH_FILES)
def test_common_formats_take_the_block_path(name, monkeypatch):
    """A guard against a change that silently sends the common formats line by line (it
    would still be correct, only several times slower): the line path must not run."""
    entries_only = [line for line in block_lines((FORMATS / name).read_text()) if " use=" in line]
    text = "".join(entries_only) + kernel_like_table(3000, seed=7)
    cols = scan_block(text)
    assert cols is not None and len(cols.l4) == text.count("\n")

    def no_fallback(*_args):
        raise AssertionError("a common-format block went line by line")

    monkeypatch.setattr(FlowStats, "_feed_lines", no_fallback)
    lines = block_lines(text)
    stats = FlowStats(TIMEOUTS)
    stats.feed_blocks(["".join(lines[i:i + 500]) for i in range(0, len(lines), 500)])
    assert stats.entries == len(lines)


def test_block_path_takes_the_common_table_without_falling_back(monkeypatch):
    def no_fallback(*_args):
        raise AssertionError("a kernel-format block went line by line")

    monkeypatch.setattr(FlowStats, "_feed_lines", no_fallback)
    for zones in (False, True):
        text = kernel_like_table(20000, seed=3, zones=zones)
        lines = block_lines(text)
        stats = FlowStats(TIMEOUTS)
        stats.feed_blocks(["".join(lines[i:i + 1500]) for i in range(0, len(lines), 1500)])
        assert stats.entries == 20000


# --- the kernel-layout pattern tried first (flowparse._KERNEL) against the general one ---

def test_kernel_pattern_stays_under_max_line():
    """Every repeat of _KERNEL is bounded, so scan_block needs no line-length pass for it:
    the longest line it can take must be shorter than MAX_LINE (which scan_line refuses)."""
    from ct_tune.flowparse import _KERNEL, MAX_LINE

    parser = getattr(re, "_parser", None)
    if parser is None:  # before Python 3.11
        import sre_parse as parser
    assert parser.parse(_KERNEL).getwidth()[1] < MAX_LINE


def bits_of(cols):
    """Columns with the two flag columns as one of scan_line's flag bits per line: which of
    the two holds a flag is no part of their meaning (the general pattern puts an
    [UNREPLIED] printed after accounting in the second, the kernel pattern in the first)."""
    if cols is None:
        return None
    names = {"UNREPLIED": 1, "ASSURED": 2, "OFFLOAD": 4, "HW_OFFLOAD": 8}
    bits = tuple(names.get(a, 0) | names.get(b, 0) for a, b in zip(cols.flag1, cols.flag2,
                                                                        strict=True))
    return cols._replace(flag1=bits, flag2=())


def kernel_and_general(text: str):
    from ct_tune.flowparse import _scan_general, _scan_kernel

    return bits_of(_scan_kernel(text)), bits_of(_scan_general(text))


@settings(max_examples=400, deadline=None)
@given(line_mix, st.integers(0, 2**32))
def test_kernel_pattern_takes_only_what_the_general_one_gives_the_same(mix, seed):
    """Whatever the kernel-layout pattern takes, the general pattern (and so scan_line, which
    the other tests hold it to) reads the same; a block it declines goes to the general."""
    text = make_text(mix, seed)
    kernel, general = kernel_and_general(text)
    if kernel is not None:
        assert general is None or kernel == general
        assert bits_of(scan_block(text)) == kernel
        lines = block_lines(text)
        for i, line in enumerate(lines):
            l3, l4, state, ttl, dst, dport, bits, zone = scan_line(line)
            assert (kernel.l3[i], kernel.l4[i], kernel.state[i] or None, int(kernel.ttl[i])
                    if kernel.ttl[i] else None, kernel.dst[i], kernel.dport[i] or None) == (
                l3, l4, state, ttl, dst, dport)
            assert kernel.flag1[i] == bits
            assert (int(kernel.zone[i]) if kernel.zone else 0) == zone
    else:
        assert bits_of(scan_block(text)) == general


@pytest.mark.parametrize("zones", [False, True])
def test_kernel_lines_take_the_kernel_pattern(zones):
    """The kernel's layout (tcp states, udp, icmpv6, accounting, zones) is taken by the
    specialised pattern whole, and reads as the general pattern reads it."""
    text = kernel_like_table(3000, seed=11, zones=zones)
    kernel, general = kernel_and_general(text)
    assert kernel is not None and len(kernel.l4) == 3000
    assert kernel == general
    assert (kernel.zone is not None) == zones


#: Kernel lines the specialised pattern must decline (each one a form only the general
#: pattern, or scan_line alone, can vouch for), with whether the general pattern takes it.
NOT_KERNEL = [
    ("ipv4     2 udp      17 30 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2  [UNREPLIED] "
     "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 mark=0 use=2", True),       # two spaces
    ("udp      17 30 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 [UNREPLIED] "
     "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 mark=0 use=2", True),       # conntrack -L
    ("ipv4     2 udp      17 30 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 [UNREPLIED] "
     "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 mark=0 use=2 zone=5", False),  # after use=
    ("ipv4     2 udp      17 30 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 [UNREPLIED] "
     "src=2.2.2.2 dst=[ASSURED] sport=2 dport=1 mark=0 use=2", True),     # a flag in a value
    ("ipv4     2 udp      17 30 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 [UNREPLIED] "
     "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 [X] mark=0 use=2", True),   # an unknown flag
    ("ipv4     2 udp      17 30 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 [UNREPLIED] "
     "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 mark=0 zone-orig=3 use=2", True),
    ("ipv4     2 tcp      6 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 "
     "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 [ASSURED] mark=0 use=2", False),  # no timeout
    ("ipv4     2 udp      17 30 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 [UNREPLIED] "
     "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 mark=0 use=2\t", False),    # odd whitespace
    ("ipv4     2 udp      17 " + "9" * 30 + " src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 "
     "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 mark=0 use=2", True),       # 30-digit timeout
    ("ipv4     2 gre      47 30 timeout=600, stream_timeout=18000 src=1.1.1.1 dst=2.2.2.2 "
     "srckey=0x0 dstkey=0x0 src=2.2.2.2 dst=1.1.1.1 srckey=0x0 dstkey=0x0 mark=0 use=2",
     True),                                                               # old GRE
]


@pytest.mark.parametrize(("odd", "general_takes"), NOT_KERNEL)
@pytest.mark.parametrize("where", [0, 1, 299])
def test_kernel_pattern_declines_and_the_general_takes_over(odd, general_takes, where):
    """One line the kernel pattern cannot vouch for, first, second or last in a block of
    plain kernel lines: it declines the whole block, and scan_block gives the general
    pattern's answer, which aggregates like the lines one by one."""
    lines = block_lines(kernel_like_table(300, seed=where))
    lines[where] = odd + "\n"
    text = "".join(lines)
    kernel, general = kernel_and_general(text)
    assert kernel is None
    assert (general is not None) == general_takes
    assert bits_of(scan_block(text)) == general
    same(by_blocks([text]), by_lines(text))


def test_kernel_pattern_needs_the_last_newline():
    text = kernel_like_table(5, seed=2)
    assert kernel_and_general(text)[0] is not None
    assert kernel_and_general(text.rstrip("\n"))[0] is None
    assert kernel_and_general(text + "\n")[0] is None  # a blank line: not an entry


def test_kernel_pattern_offloaded_and_mixed_flags():
    """Offloaded entries (no timeout) and a block mixing flags and layer 3 versions: the
    single-character captures map back to the names the general pattern gives."""
    lines = [
        "ipv4     2 tcp      6 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 src=2.2.2.2 "
        "dst=1.1.1.1 sport=2 dport=1 [OFFLOAD] mark=0 zone=0 use=2\n",
        "ipv6     10 tcp      6 src=::1 dst=::2 sport=1 dport=2 src=::2 dst=::1 sport=2 "
        "dport=1 [HW_OFFLOAD] mark=0 zone=0 use=2\n",
        "ipv4     2 udp      17 30 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 [UNREPLIED] "
        "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 mark=0 zone=7 use=2\n",
        "ipv4     2 tcp      6 5 ESTABLISHED src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 "
        "src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1 [ASSURED] mark=0 use=2\n",
    ]
    text = "".join(lines)
    kernel, general = kernel_and_general(text)
    assert kernel is not None
    assert kernel.l3 == ("ipv4", "ipv6", "ipv4", "ipv4")
    assert kernel.flag1 == (4, 8, 1, 2)
    assert kernel.zone == ("0", "0", "7", "0")
    assert general is None  # the last line has no zone: the general pattern declines
    same(by_blocks([text]), by_lines(text))
