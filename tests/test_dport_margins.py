"""Destination-port counts of a sample cut short by --sample-limit are estimates: every
place that shows one (the table's why-text, --explain, JSON evidence) gives its 95 %
margin beside it, as the class counts do."""

from __future__ import annotations

import json
import math

from conftest import run_cli, tree_args

from ct_tune import attribution, whatif
from ct_tune.flows import FlowStats

TIMEOUTS = {"nf_conntrack_udp_timeout": 30, "nf_conntrack_tcp_timeout_time_wait": 120,
            "nf_conntrack_tcp_timeout_close_wait": 60}


def _margin(count_read: int, read: int, total: int) -> int:
    """The 95 % margin of a count seen `count_read` times in `read` of `total` entries,
    written out here (normal approximation with the finite population correction)."""
    p = count_read / read
    fpc = math.sqrt((total - read) / (total - 1))
    return math.ceil(1.96 * math.sqrt(p * (1 - p) / read) * fpc * total)


def _udp(i: int, dport: int) -> str:
    a = f"10.9.{i // 250}.{i % 250}"
    return (f"ipv4     2 udp      17 {20 + i % 9} src={a} dst=192.0.2.53 sport={1024 + i} "
            f"dport={dport} [UNREPLIED] src=192.0.2.53 dst={a} sport={dport} "
            f"dport={1024 + i} mark=0 zone=0 use=2\n")


def _tw(i: int, dport: int) -> str:
    a = f"10.8.{i // 250}.{i % 250}"
    return (f"ipv4     2 tcp      6 {i % 120} TIME_WAIT src={a} dst=192.0.2.80 "
            f"sport={2000 + i} dport={dport} src=192.0.2.80 dst={a} sport={dport} "
            f"dport={2000 + i} [ASSURED] mark=0 zone=0 use=2\n")


#: 3,000 unreplied UDP flows: 4 in 5 to port 53, the rest to 123
LINES = [_udp(i, 53 if i % 5 else 123) for i in range(3000)]
READ, TOTAL = 2000, 100000


def _sampled(lines: list[str]) -> dict:
    stats = FlowStats(TIMEOUTS)
    stats.feed(lines, limit=READ)
    return stats.summary(total=TOTAL)


def test_port_counts_of_a_scaled_sample_carry_their_margin():
    flows = _sampled(LINES)
    seen = sum(1 for line in LINES[:READ] if "dport=53 " in line)
    est, margin = round(seen * TOTAL / READ), _margin(seen, READ, TOTAL)
    assert margin > 0
    assert attribution.dominant_port(flows, "udp/unreplied", 0.5) == [
        53, est, round(seen / READ, 4), margin]
    top = whatif.share(flows, "udp/unreplied")["top_dports"]
    assert top[0] == [53, est, margin]
    other = READ - seen
    assert top[1] == [123, round(other * TOTAL / READ), _margin(other, READ, TOTAL)]
    cand = attribution.notrack_candidate(flows, 0.5)
    assert (cand["port"], cand["entries"], cand["margin"]) == (53, est, margin)


def test_a_whole_table_has_exact_port_counts():
    stats = FlowStats(TIMEOUTS)
    stats.feed(LINES)
    flows = stats.summary()
    assert attribution.dominant_port(flows, "udp/unreplied", 0.5)[3] == 0
    assert all(m == 0 for _, _, m in whatif.share(flows, "udp/unreplied")["top_dports"])
    assert "\u00b1" not in whatif.describe(whatif.whatif(
        flows, "nf_conntrack_udp_timeout", 10))


def test_whatif_ports_of_idle_flows_carry_their_margin():
    lines = [_tw(i, 80 if i % 4 else 8080) for i in range(3000)]
    flows = _sampled(lines)
    result = whatif.whatif(flows, "nf_conntrack_tcp_timeout_time_wait", 60)
    assert result["top_dports"]
    for port, n, m in result["top_dports"]:
        assert m == whatif.sample_margin(flows, n) > 0, port
    text = whatif.describe(result)
    port, n, m = result["top_dports"][0]
    assert f"{port} x {n:,} \u00b1 {m:,}" in text


def test_audit_shows_the_dominant_ports_margin_in_table_explain_and_json(tree):
    roots = tree("defaults-16g")
    roots.proc("net/nf_conntrack").write_text("".join(LINES))
    roots.proc("sys/net/netfilter/nf_conntrack_count").write_text(f"{TOTAL}\n")
    seen = sum(1 for line in LINES[:READ] if "dport=53 " in line)
    est, margin = round(seen * TOTAL / READ), _margin(seen, READ, TOTAL)
    shown = f"{est:,} \u00b1 {margin:,}"
    args = ["--sample-limit", str(READ), *tree_args(roots)]

    report = json.loads(run_cli("audit", "--format", "json", *args).stdout)
    dom = next(f for f in report["findings"] if f["rule"] == "udp-unreplied-dominance")
    assert f"(dport 53: {shown}, " in dom["summary"]
    assert dom["evidence"]["port"] == [53, est, round(seen / READ, 4), margin]
    assert dom["evidence"]["uu"]["top_dports"][0] == [53, est, margin]
    notrack = next(f for f in report["findings"] if f["rule"] == "notrack")
    assert notrack["evidence"]["c"]["margin"] == margin
    explain = run_cli("audit", "--explain", *args).stdout
    assert f"Destination port 53 holds {shown} of them" in explain
    assert f"holds {shown} of the sampled table's entries" in explain  # notrack
