"""`ct-tune check` against the running kernel, inside a throwaway namespace (root only)."""

from __future__ import annotations

import sys

import pytest
from conftest import run_cli
from netns import namespace, read_sysctl, sh
from test_monitoring import families, parse_check, sample_values

pytestmark = pytest.mark.root

FLOWS = 300
# one UDP datagram from each of FLOWS sockets to the discard port: FLOWS unreplied entries
# (30 s timeout), all on loopback inside the namespace
SEND = (f"import socket\nsocks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) "
        f"for _ in range({FLOWS})]\n"
        "for s in socks:\n    s.sendto(b'x', ('127.0.0.1', 9))\n")


def test_check_counts_the_namespace_table_and_applies_the_thresholds(tmp_path):
    with namespace() as ns:
        sh(sys.executable, "-c", SEND, ns=ns)
        limit = int(read_sysctl(ns, "net.netfilter.nf_conntrack_max"))
        warn_pct = 150 * 100 / limit  # a warning threshold of about 150 entries
        out = tmp_path / "ct_tune.prom"
        proc = run_cli("check", "-w", f"{warn_pct:.6f}", "-c", "100", "--duration", "0.5",
                       "--interval", "0.1", "--textfile", str(out), netns=ns)
        after = int(read_sysctl(ns, "net.netfilter.nf_conntrack_count"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    state, _, perf = parse_check(proc.stdout)
    assert state == "WARNING"
    entries = int(perf["entries"]["value"])
    assert entries >= FLOWS and abs(entries - after) <= 10
    assert perf["entries"]["max"] == str(limit)
    assert int(perf["entries_peak"]["value"]) >= entries
    assert float(perf["drop_per_s"]["value"]) == 0
    fams = families(out.read_text())
    assert sample_values(fams["ct_tune_status"]) == {(): 1}
    assert sample_values(fams["ct_tune_usage_ratio"])[()] == pytest.approx(entries / limit)
    assert sample_values(fams["ct_tune_sampled_peak_entries"])[()] >= entries
