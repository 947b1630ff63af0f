"""What-if projections: the arithmetic, on tables run through the real parser and aggregates."""

from __future__ import annotations

import pytest
from flowgen import lines
from hypothesis import given
from hypothesis import strategies as st

from ct_tune import whatif
from ct_tune.flows import FlowStats

KEY = "net.netfilter.nf_conntrack_tcp_timeout_time_wait"
TIMEOUTS = {"nf_conntrack_tcp_timeout_time_wait": 120,
            "nf_conntrack_tcp_timeout_established": 432000,
            "nf_conntrack_udp_timeout": 30}


def table(*specs: dict) -> dict:
    stats = FlowStats(TIMEOUTS)
    start = 0
    for spec in specs:
        stats.feed(lines(spec, TIMEOUTS, start))
        start += spec["count"]
    return stats.summary()


TW = table({"class": "tcp/TIME_WAIT", "count": 12000, "dport": 80, "idle": [0, 120]})


def test_no_sample_or_no_entries_answers_none():
    assert whatif.whatif(None, KEY, 60) is None
    assert whatif.whatif(TW, "net.netfilter.nf_conntrack_udp_timeout", 60) is None
    assert whatif.occupancy(None, {}) is None
    assert whatif.share(TW, "udp/unreplied") is None


def test_same_timeout_changes_nothing():
    result = whatif.whatif(TW, KEY, 120)
    assert result["idle_beyond"] == 0
    assert result["projected"] == result["entries"] == 12000


@pytest.mark.parametrize(("seconds", "held"), [(60, 6000), (30, 3000), (240, 24000)])
def test_entries_that_sit_out_the_timeout_follow_rate_times_timeout(seconds, held):
    # TIME_WAIT entries always live the full timeout: Little's law gives rate x timeout.
    assert whatif.whatif(TW, KEY, seconds)["projected"] == pytest.approx(held, rel=0.02)


def test_idle_beyond_counts_and_names_ports_of_idle_flows_only():
    t = table({"class": "tcp/ESTABLISHED", "count": 300, "dport": 443, "idle": [0, 3000]},
              {"class": "tcp/ESTABLISHED", "count": 40, "dport": 5432, "idle": [7000, 9000]})
    result = whatif.whatif(t, "nf_conntrack_tcp_timeout_established", 6000)
    assert result["idle_beyond"] == 40
    assert result["top_dports"] == [[5432, 40, 0]]  # a whole table: margin 0
    assert result["projected"] == 300


def test_occupancy_sums_changed_keys_and_keeps_the_rest():
    t = table({"class": "tcp/TIME_WAIT", "count": 1200, "idle": [0, 120]},
              {"class": "udp/unreplied", "count": 300, "dport": 53, "idle": [0, 30]})
    occ = whatif.occupancy(t, {"nf_conntrack_tcp_timeout_time_wait": 60})
    assert occ["entries"] == 1500
    assert [c["key"] for c in occ["changes"]] == [KEY]
    assert occ["projected"] == pytest.approx(600 + 300, rel=0.02)


def test_share_gives_littles_law_rate():
    s = whatif.share(TW, "tcp/TIME_WAIT")
    assert s["share"] == 1.0
    assert s["rate"] == pytest.approx(100, rel=0.02)  # 12000 entries / 120 s
    assert s["top_dports"] == [[80, 12000, 0]]


@given(st.lists(st.integers(1, 500000), min_size=2, max_size=6))
def test_projection_never_shrinks_as_the_timeout_grows(values):
    t = table({"class": "tcp/ESTABLISHED", "count": 500, "idle": [0, 400000]})
    held = [whatif.whatif(t, "nf_conntrack_tcp_timeout_established", v)["projected"]
            for v in sorted(values)]
    assert held == sorted(held)


def test_describe_reads_like_a_sentence():
    text = whatif.describe(whatif.whatif(TW, KEY, 60))
    assert text.startswith("Table sample: 12,000 entries are held by this timeout now (2 min).")
    assert "would already have been forgotten (top destination ports: 80 x" in text
    assert whatif.describe(None) == ""
