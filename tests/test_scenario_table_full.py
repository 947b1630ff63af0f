"""Scenario 2 of issue 14 on the real kernel: a full table (root, host-modifying).

nf_conntrack_max is global, the count it is checked against is each namespace's own: the
test lowers the host's max (to a value computed from the fullest table on the host now),
overflows it from a namespace, and runs the loop where the fix is applied, on the host:
`ct-tune audit --duration` there must see the namespace's drops through /proc/PID/net,
report critical and recommend a max that fits; `ct-tune apply` on the host (files under a
scratch --root, state on a private /var/lib); the same workload then has no drops.
Inside the namespace the same overflow is critical too, with the host command to run.

Runs only with CT_TUNE_HOST_TESTS=1 (.ci/run sets it).  Every host value under
/proc/sys/net/netfilter is restored afterwards, by the scenario's own try/finally and by
the fixture's finalizer, whatever fails.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from netns import require_netns
from scenario import HostTooBusy, by_rule, host_values, restore_host, table_full

pytestmark = [
    pytest.mark.root, pytest.mark.host_modifying,
    pytest.mark.skipif(os.environ.get("CT_TUNE_HOST_TESTS") != "1",
                       reason="changes the host's nf_conntrack_max: set CT_TUNE_HOST_TESTS=1"),
]


@pytest.fixture
def host_restored():
    """The host's netfilter values before the test, written back after it."""
    require_netns()
    saved = host_values()
    yield saved
    assert restore_host(saved) == []
    assert host_values() == saved


def test_full_table_in_a_namespace_is_fixed_from_the_host(host_restored, tmp_path: Path):
    t0 = time.monotonic()
    try:
        r = table_full(tmp_path)
    except HostTooBusy as e:
        pytest.skip(str(e))
    print(r["timings"])
    assert r["not_restored"] == []
    small, k = r["small"], r["workload"]
    before, after = r["before"], r["after"]
    # the failure: the namespace's table stops at the small max, the rest is dropped
    assert before["connected"] < k and before["count"] >= small * 0.95, before
    assert before["drop"] > 0, before
    # inside the namespace: critical, max is the host's, with the exact host command
    inside = by_rule(r["ns_report"])["conntrack-max"]
    assert inside["severity"] == "critical" and inside["scope"] == "host", inside
    assert f"sysctl -w net.netfilter.nf_conntrack_max={inside['recommended']}" in (
        inside["summary"])
    # on the host: its own table is nearly empty, the namespace's is seen and drives it
    mx = by_rule(r["host_report"])["conntrack-max"]
    assert r["host_report"]["status"] == "critical"
    assert mx["severity"] == "critical", mx
    ns = mx["evidence"]["ns"]
    assert ns["entries"] >= small * 0.95 and (ns["drop_per_s"] or 0) > 0, ns
    assert "network namespace" in mx["summary"] and "demand above the limit" in mx["summary"]
    # a full table's count is a lower bound: a 4x step, which fits the real demand
    assert mx["recommended"] >= 4 * small and mx["recommended"] * 0.5 >= k
    assert mx["evidence"]["limited_by_budget"] is False
    drops = by_rule(r["host_report"])["table-drops"]
    assert drops["severity"] == "critical" and "network namespace" in drops["summary"]
    # apply on the host, then the same workload: every connection, no drop
    assert r["applied"].returncode == 0, r["applied"].stdout + r["applied"].stderr
    assert r["max_after"] == mx["recommended"]
    assert after["connected"] == k and after["drop"] == 0 and after["early_drop"] == 0, after
    assert by_rule(r["after_report"])["conntrack-max"]["severity"] in ("ok", "info")
    print(f"scenario 2: {time.monotonic() - t0:.1f} s, max {small} -> {r['max_after']}, "
          f"workload {k}")
