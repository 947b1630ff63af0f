"""Scenario 3 of issue 14 on the real kernel (root only): a table bloated by unreplied
UDP because udp_timeout was raised to 600 s.  ct-tune names that timeout as the cause,
apply brings it back to the kernel's 30 s, and the same workload then holds what the
what-if projection predicted (tests/scenario.py udp_bloat)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from scenario import RAISED, by_rule, udp_bloat
from test_realkernel_diagnosis import N_UDP

pytestmark = pytest.mark.root


def test_raised_udp_timeout_applied_back_shrinks_the_table_to_the_projection(tmp_path: Path):
    t0 = time.monotonic()
    r = udp_bloat(tmp_path / "rules")
    assert r["entries_before"] >= N_UDP
    udp = by_rule(r["report"])["udp-timeout"]
    assert (udp["current"], udp["recommended"], udp["severity"]) == (RAISED, 30, "warning")
    assert "udp_timeout=600" in udp["summary"] and "holds" in udp["summary"]
    projected = udp["evidence"]["whatif"]["projected"]
    margin = udp["evidence"]["whatif"]["projected_margin"]
    assert projected < N_UDP / 10  # the projection: a small fraction of the table stays
    assert r["applied"].returncode == 0, r["applied"].stdout + r["applied"].stderr
    assert r["udp_after"] == 30
    # the kernel, under the applied timeout, keeps what the projection said: within its
    # stated (sampling) margin plus the model's granularity, one second of arrivals
    per_second = N_UDP / RAISED
    assert abs(r["entries_after"] - projected) <= margin + max(2 * per_second, 0.05 * projected)
    assert r["entries_after"] <= r["entries_before"] / 10
    # at the kernel's default the rule has nothing to say, and no other finding blames UDP
    assert "udp-timeout" not in by_rule(r["after_report"])
    assert r["after_report"]["status"] == "ok", r["after_report"]["findings"]
    print(f"scenario 3: {time.monotonic() - t0:.1f} s, {r['entries_before']} -> "
          f"{r['entries_after']} entries, projected {projected} +- {margin}")
