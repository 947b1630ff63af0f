"""A table of more than 65,536 lines is read whole and parsed from every k-th line
(flows.sample_every): its size stays exact, every other count becomes an estimate whose
95 % margin covers the truth, and the evidence says so."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_flowblocks import TIMEOUTS

from ct_tune import whatif
from ct_tune.flowparse import block_lines
from ct_tune.flows import SAMPLE_ROWS, FlowStats, sample_every


def test_k_is_one_up_to_65536_entries():
    assert [sample_every(n) for n in (None, 0, 1, SAMPLE_ROWS, SAMPLE_ROWS + 1, 250_000,
                                      1_000_000)] == [1, 1, 1, 1, 2, 4, 16]


def table(n: int, seed: int, bad: float = 0.0) -> tuple[str, Counter, Counter]:
    """n kernel lines in random order: 30 % UDP to port 53, 10 % TCP to 443, the rest UDP
    spread over 20,000 ports, and a `bad` share of lines cut short.  Returns the text and
    the true count of each port and of each class."""
    rnd = random.Random(seed)
    ports: Counter = Counter()
    classes: Counter = Counter()
    out = []
    for i in range(n):
        r = rnd.random()
        port = 53 if r < 0.3 else 443 if r < 0.4 else rnd.randrange(10000, 30000)
        if port == 443:
            line = (f"ipv4     2 tcp      6 {rnd.randrange(432000)} ESTABLISHED "
                    f"src=10.0.0.1 dst=10.1.{i % 200}.9 sport={1024 + i % 60000} "
                    f"dport=443 src=10.1.{i % 200}.9 dst=10.0.0.1 sport=443 "
                    f"dport={1024 + i % 60000} [ASSURED] mark=0 use=2\n")
            cls = "tcp/ESTABLISHED"
        else:
            line = (f"ipv4     2 udp      17 {rnd.randrange(31)} src=10.0.0.1 "
                    f"dst=10.2.{i % 250}.{i % 7} sport={1024 + i % 60000} dport={port} "
                    f"[UNREPLIED] src=10.2.{i % 250}.{i % 7} dst=10.0.0.1 sport={port} "
                    f"dport={1024 + i % 60000} mark=0 use=2\n")
            cls = "udp/unreplied"
        if rnd.random() < bad:
            out.append(line[:40] + "\n")
            continue
        ports[port] += 1
        classes[cls] += 1
        out.append(line)
    return "".join(out), ports, classes


def blocks_of(text: str, size: int = 1500) -> list[str]:
    lines = block_lines(text)
    return ["".join(lines[i:i + size]) for i in range(0, len(lines), size)]


def within(est: int, margin: int, truth: int) -> bool:
    return abs(est - truth) <= margin


def test_a_large_table_is_parsed_from_every_kth_line_within_the_margins():
    n = 150_000
    text, ports, classes = table(n, seed=11)
    blocks = blocks_of(text)
    every = sample_every(n)
    assert every == 3
    exact, sampled = FlowStats(TIMEOUTS), FlowStats(TIMEOUTS, every)
    exact.feed_blocks(blocks)
    sampled.feed_blocks(blocks)
    a, b = exact.summary(), sampled.summary()

    # every line parsed: exact, no margins
    assert (a["entries_read"], a["entries_estimated"], a["sampled"], a["every"]) == (
        n, n, False, 1)
    assert a["top_dports"][:2] == [[53, ports[53]], [443, ports[443]]]
    assert {k: (c["entries"], c["margin"]) for k, c in a["classes"].items()} == {
        k: (v, 0) for k, v in classes.items()}

    # every 3rd line parsed: the table's size is still exact (all lines read) ...
    assert (b["lines_read"], b["entries_read"], b["every"]) == (n, n // 3, 3)
    assert b["entries_estimated"] == n and b["sampled"] is True and b["scale"] == 3.0
    # ... classes, flags and ports are estimates, each within its 95 % margin
    for name, truth in classes.items():
        cls = b["classes"][name]
        assert 0 < cls["margin"] < 0.01 * n
        assert within(cls["entries"], cls["margin"], truth), (name, cls, truth)
    assert [p for p, _ in b["top_dports"][:2]] == [53, 443]
    for (port, est), (_, margin) in zip(b["top_dports"][:2], b["margins"]["top_dports"][:2],
                                        strict=True):
        assert 0 < margin < 0.01 * n
        assert within(est, margin, ports[port]), (port, est, ports[port], margin)
    unreplied = b["by_flag"]["UNREPLIED"]
    assert within(unreplied, b["margins"]["by_flag"]["UNREPLIED"], classes["udp/unreplied"])
    # the idle histograms are scaled the same way: they sum to the class estimate
    for cls in b["classes"].values():
        assert abs(sum(cls["idle_histogram"].values()) - cls["entries"]) <= len(
            cls["idle_histogram"])
    # the same margins reach the evidence the rules print
    udp = whatif.share(b, "udp/unreplied")
    assert udp["margin"] > 0 and within(udp["entries"], udp["margin"],
                                        classes["udp/unreplied"])
    port, count, margin = udp["top_dports"][0]
    assert port == 53 and margin > 0 and within(count, margin, ports[53])
    assert whatif.share(a, "udp/unreplied")["top_dports"][0] == [53, ports[53], 0]


def test_unreadable_lines_are_estimated_from_the_lines_parsed():
    """2 % of the lines cut short: the share is estimated from the sample, the entries
    are the lines read less that share."""
    n = 120_000
    text, _, classes = table(n, seed=5, bad=0.02)
    stats = FlowStats(TIMEOUTS, sample_every(n))
    stats.feed_blocks(blocks_of(text))
    s = stats.summary()
    good = sum(classes.values())
    assert s["lines_read"] == n and s["every"] == 2
    assert s["entries_read"] + s["malformed"] == n // 2
    assert 0.015 < s["malformed_share"] < 0.025
    assert abs(s["entries_estimated"] - good) < 0.005 * n


def test_a_block_path_and_the_line_path_pick_the_same_lines():
    """Line i is parsed when i % k == 0, counted across blocks: cutting the table anywhere,
    with or without its last newline, and stopping at a limit give the same result."""
    text, _, _ = table(5000, seed=3, bad=0.01)
    for cut_last in (False, True):
        body = text[:-1] if cut_last else text
        for limit in (None, 4321):
            ref = FlowStats(TIMEOUTS, 7)
            ref.feed(block_lines(body), limit=limit)
            for size in (1, 6, 7, 500, 5000):
                got = FlowStats(TIMEOUTS, 7)
                got.feed_blocks(blocks_of(body, size), limit=limit)
                assert got.summary() == ref.summary(), (cut_last, limit, size)
            assert ref.lines == (limit or 5000)
            assert ref.parsed == -(-(limit or 5000) // 7)


def test_a_dump_of_made_up_protocols_states_and_zones_stays_bounded():
    """Each new protocol name, TCP state or zone used to get its own histogram: a 50,000
    line dump of made-up ones took 530 MiB.  Past the bounds they count under "other",
    every entry still counted, the same line by line as in blocks."""
    from ct_tune.flows import MAX_CLASSES, MAX_L4, MAX_ZONES, OTHER

    n = 6000
    lines = []
    for i in range(n):
        if i % 2:
            lines.append(f"ipv4     2 p{i} 253 30 src=10.0.0.1 dst=10.0.0.2 mark=0 "
                         f"zone={i + 1} use=2\n")
        else:
            lines.append(f"ipv4     2 tcp      6 30 S{i} src=10.0.0.1 dst=10.0.0.2 sport=1 "
                         f"dport=2 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 mark=0 "
                         f"zone={i + 1} use=2\n")
    text = "".join(lines)
    by_blocks = FlowStats(TIMEOUTS)
    by_blocks.feed_blocks(blocks_of(text, 700))
    by_lines = FlowStats(TIMEOUTS)
    by_lines.feed(block_lines(text))
    a, b = by_blocks.summary(), by_lines.summary()
    assert a == b
    assert a["entries_read"] == n and a["malformed"] == 0
    assert len(a["classes"]) == MAX_CLASSES + 1 and a["classes"][OTHER]["entries"] > 0
    assert sum(c["entries"] for c in a["classes"].values()) == n
    assert len(a["by_l4"]) == MAX_L4 + 1 and sum(a["by_l4"].values()) == n
    assert a["by_l4"]["tcp"] == n // 2
    assert len(a["by_zone"]) == MAX_ZONES + 1 and sum(a["by_zone"].values()) == n
    assert len(by_blocks._class_key) <= 4 * MAX_CLASSES


def test_the_texts_say_why_the_counts_are_estimates():
    n = 100_000
    text, _, _ = table(n, seed=2)
    exact, sampled = FlowStats(TIMEOUTS), FlowStats(TIMEOUTS, sample_every(n))
    for stats in (exact, sampled):
        stats.feed_blocks(blocks_of(text))
    key = "nf_conntrack_udp_timeout"
    a = whatif.whatif(exact.summary(), key, 10)
    b = whatif.whatif({**sampled.summary(), "limit": None}, key, 10)
    assert "basis" not in a and "Estimates" not in whatif.describe(a)
    assert b["basis"] == ("the table was read whole (100,000 lines) and 50,000 entries "
                          "parsed, every 2nd line, then scaled up to 100,000")
    assert f"Estimates: {b['basis']}; ± is the 95 % sampling margin." in whatif.describe(b)
    cut = {**exact.summary(total=400_000), "limit": n}
    assert whatif.sample_basis(cut) == ("the sample was cut short by --sample-limit at "
                                        "100,000 entries and scaled up to the table's count "
                                        "(400,000)")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.integers(0, 65535), st.integers(0, 6), max_size=40),
       st.integers(0, 12))
def test_top_ports_are_the_largest_counts_lower_port_first(counts, k):
    """The order heapq.nlargest gave before (a stable sort by count, descending), with
    ties, fewer ports than k, and ports counted 0."""
    stats = FlowStats({})
    for port, c in counts.items():
        stats.ports[port] = c
    want = [(p, c) for p, c in sorted(enumerate(stats.ports), key=lambda pc: pc[1],
                                      reverse=True)[:k] if c]
    assert stats.top_ports(k) == want


@pytest.mark.parametrize("spread", ["every port once", "every port, random counts"])
def test_top_ports_of_a_table_spread_over_every_port(spread):
    stats = FlowStats({})
    rng = random.Random(7)
    for port in range(65536):
        stats.ports[port] = 1 if spread == "every port once" else rng.randrange(50)
    want = sorted(enumerate(stats.ports), key=lambda pc: pc[1], reverse=True)[:10]
    assert stats.top_ports() == want
