"""Scenario 1 of issue 14 on the real kernel (root only): the idle pooled connection.

A client and a server namespace joined by a veth pair; the server drops packets of NEW
connections that carry PSH (the article's `iptables -m state --state NEW -m tcp
--tcp-flags PSH PSH -j DROP`, in nft); its established timeout is below the pool's idle
period.  The request after the idle period is dropped and retransmitted until the client
gives up; ct-tune's audit, with the idle flow in its sample, flags the timeout; after
`ct-tune apply` the same idle period ends with an answer.  Time is scaled down
(tests/scenario.py: SCALE).
"""

from __future__ import annotations

import time

import pytest
from scenario import EST_SHORT, IDLE, KEEPALIVE, SCALE, by_rule, idle_pool

pytestmark = pytest.mark.root


def test_idle_pooled_connection_is_dropped_until_the_established_timeout_is_applied():
    t0 = time.monotonic()
    r = idle_pool()
    before, after = r["before"], r["after"]
    # the failure: the entry expired during the idle period, the request was NEW with
    # PSH, dropped by the rule each time it was sent, retransmitted until the give-up
    assert before["second"] is None and before["error"], before
    assert before["dropped"] >= 2 and before["retrans"] >= 1, before
    # the audit saw the pooled flow, idle, in the table it sampled
    assert len(r["entries"]) == 1, r["entries"]
    est = by_rule(r["report"])["tcp-timeout-established"]
    assert est["current"] == EST_SHORT
    assert est["severity"] in ("warning", "critical"), est
    assert "idle-connection trap" in est["summary"] or "forgotten" in est["summary"]
    # the floor is this namespace's keepalive: time + one probe interval (scaled)
    floor = KEEPALIVE["net.ipv4.tcp_keepalive_time"] + KEEPALIVE["net.ipv4.tcp_keepalive_intvl"]
    assert est["evidence"]["ka_floor"] == floor
    assert est["recommended"] > IDLE and est["recommended"] >= floor
    # the sampled flow's idle time is evidence: it is in the audit's sample
    est_class = r["report"]["facts"]["flows"]["classes"]["tcp/ESTABLISHED"]
    assert est_class["entries"] >= 1 and est_class["timeout"] == EST_SHORT
    # apply in the server's namespace sets it live; the same idle period now gets its answer
    assert r["applied"].returncode == 0, r["applied"].stdout + r["applied"].stderr
    assert r["est_after"] == est["recommended"]
    assert after["second"] == "pong:2", after
    assert after["dropped"] == 0 and after["retrans"] == 0, after
    assert after["idle"] >= IDLE
    after_est = by_rule(r["after_report"])["tcp-timeout-established"]
    assert after_est["severity"] in ("ok", "info"), after_est
    print(f"scenario 1 ({SCALE}x scale): {time.monotonic() - t0:.1f} s")
