"""Ports and addresses counted from every k-th entry of a large table (flows.detail_every):
entries, classes and idle histograms stay exact, port counts become estimates whose
95 % margin covers the truth, and the evidence says so."""

from __future__ import annotations

import random
from collections import Counter

from test_flowblocks import TIMEOUTS

from ct_tune import whatif
from ct_tune.flowparse import block_lines
from ct_tune.flows import DETAIL_ROWS, FlowStats, detail_every


def test_k_is_one_up_to_65536_entries():
    assert [detail_every(n) for n in (None, 0, 1, DETAIL_ROWS, DETAIL_ROWS + 1, 250_000,
                                      1_000_000)] == [1, 1, 1, 1, 2, 4, 16]


def table(n: int, seed: int) -> tuple[str, Counter]:
    """n UDP/TCP kernel lines: 30 % to port 53, 10 % to 443, the rest spread over 20,000
    ports; returns the text and the true count of each port."""
    rnd = random.Random(seed)
    truth: Counter = Counter()
    out = []
    for i in range(n):
        r = rnd.random()
        port = 53 if r < 0.3 else 443 if r < 0.4 else rnd.randrange(10000, 30000)
        truth[port] += 1
        if port == 443:
            out.append(f"ipv4     2 tcp      6 {rnd.randrange(432000)} ESTABLISHED "
                       f"src=10.0.0.1 dst=10.1.{i % 200}.9 sport={1024 + i % 60000} "
                       f"dport=443 src=10.1.{i % 200}.9 dst=10.0.0.1 sport=443 "
                       f"dport={1024 + i % 60000} [ASSURED] mark=0 use=2\n")
        else:
            out.append(f"ipv4     2 udp      17 {rnd.randrange(31)} src=10.0.0.1 "
                       f"dst=10.2.{i % 250}.{i % 7} sport={1024 + i % 60000} dport={port} "
                       f"[UNREPLIED] src=10.2.{i % 250}.{i % 7} dst=10.0.0.1 sport={port} "
                       f"dport={1024 + i % 60000} mark=0 use=2\n")
    return "".join(out), truth


def blocks_of(text: str, size: int = 1500) -> list[str]:
    lines = block_lines(text)
    return ["".join(lines[i:i + size]) for i in range(0, len(lines), size)]


def test_large_table_counts_ports_from_every_kth_entry_within_the_margin():
    n = 150_000
    text, truth = table(n, seed=11)
    blocks = blocks_of(text)
    every = detail_every(n)
    assert every == 3
    exact, detailed = FlowStats(TIMEOUTS), FlowStats(TIMEOUTS, every)
    exact.feed_blocks(blocks)
    detailed.feed_blocks(blocks)
    a, b = exact.summary(), detailed.summary()

    # what is counted from every entry is unchanged, to the entry
    for key in ("entries_read", "entries_estimated", "by_l3", "by_l4", "by_flag"):
        assert a[key] == b[key], key
    for name, cls in a["classes"].items():
        for key in ("entries", "margin", "idle_histogram"):
            assert b["classes"][name][key] == cls[key], (name, key)
    assert a["top_dports"][:2] == [[53, truth[53]], [443, truth[443]]]
    assert a["detail_every"] == 1 and a["detail_entries"] == n

    # ports: estimates from n / 3 entries, each within its 95 % margin of the truth
    assert b["detail_every"] == 3 and b["detail_entries"] == n // 3
    assert [p for p, _ in b["top_dports"][:2]] == [53, 443]
    for (port, est), (_, margin) in zip(b["top_dports"][:2], b["margins"]["top_dports"][:2],
                                        strict=True):
        assert 0 < margin < 0.01 * n
        assert abs(est - truth[port]) <= margin, (port, est, truth[port], margin)
    # the same margins reach the evidence the rules print
    udp = whatif.share(b, "udp/unreplied")
    assert udp["margin"] == 0                       # the class count is exact
    port, count, margin = udp["top_dports"][0]
    assert port == 53 and margin > 0 and abs(count - truth[53]) <= margin
    assert whatif.share(a, "udp/unreplied")["top_dports"][0] == [53, truth[53], 0]


def test_a_block_path_and_the_line_path_pick_the_same_entries():
    """Entry i is a detail entry when i % k == 0, counted across blocks: cutting the
    table anywhere gives the same ports."""
    text, _ = table(5000, seed=3)
    ref = FlowStats(TIMEOUTS, 7)
    ref.feed(block_lines(text))
    for size in (1, 6, 7, 500, 5000):
        got = FlowStats(TIMEOUTS, 7)
        got.feed_blocks(blocks_of(text, size))
        assert got.summary() == ref.summary(), size


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
