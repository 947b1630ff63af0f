"""ct-tune against the running kernel, inside a fresh network namespace (root only)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from netns import namespace, read_sysctl, write_sysctl

pytestmark = pytest.mark.root

UDP = "net.netfilter.nf_conntrack_udp_timeout"


def test_audit_inside_a_namespace_reports_its_real_values_and_readonly_globals():
    host_udp = read_sysctl(None, UDP)
    with namespace() as ns:
        new = 45 if host_udp != "45" else 46
        write_sysctl(ns, UDP, new)
        proc = run_cli("audit", "--format", "json", netns=ns)
        assert proc.returncode in (0, 1, 2), proc.stderr
        report = json.loads(proc.stdout)
        sysctl = report["facts"]["sysctl"]
        assert sysctl[f"{UDP}"] == {"value": new, "writable": True}
        # the global keys are read-only here, exactly a container's situation
        for key in ("nf_conntrack_max", "nf_conntrack_buckets", "nf_conntrack_expect_max"):
            assert sysctl[f"net.netfilter.{key}"]["writable"] is False, key
        assert report["facts"]["conntrack"]["initial_netns"] is False
        assert "net.nf_conntrack_max" not in sysctl
        rules = {f["rule"]: f for f in report["findings"]}
        assert "netns-readonly" in rules
        assert rules["conntrack-max"]["scope"] == "host"
        # and the real global values are what the namespace sees
        assert sysctl["net.netfilter.nf_conntrack_max"]["value"] == int(
            read_sysctl(None, "net.netfilter.nf_conntrack_max"))
    # the host's own value was never touched
    assert read_sysctl(None, UDP) == host_udp


def test_audit_on_this_host_uses_initial_namespace():
    with namespace(nft=False):  # only to apply the same root/netns skip conditions
        pass
    report = json.loads(run_cli("audit", "--format", "json").stdout)
    assert report["facts"]["conntrack"]["initial_netns"] is True
    assert report["facts"]["sysctl"]["net.netfilter.nf_conntrack_max"]["writable"] is True
    assert report["facts"]["conntrack"]["slab_object_size"] > 0


def test_counters_in_a_namespace_are_counted_since_its_creation_not_since_boot():
    """/proc/net/stat/nf_conntrack shows the reader's namespace's counters (net->ct.stat),
    which start when the namespace is created: a fresh namespace's totals are not the
    host's since boot."""
    with namespace() as ns:
        proc = run_cli("audit", "--all", "--format", "json", netns=ns)
        assert proc.returncode in (0, 1, 2), proc.stderr
        drops = {f["rule"]: f for f in json.loads(proc.stdout)["findings"]}["table-drops"]
    since = "since this network namespace was created"
    assert since in drops["summary"] and "since boot" not in drops["summary"]
    assert f"These are totals {since}" in drops["explanation"]
    assert "since boot" not in drops["explanation"]
    # the host's uptime is not the period the namespace's counters cover
    assert drops["evidence"]["uptime_days"] is None and drops["evidence"]["per_day"] is None
    host = run_cli("audit", "--all", "--format", "json")
    drops = {f["rule"]: f for f in json.loads(host.stdout)["findings"]}["table-drops"]
    assert "since boot" in drops["explanation"] and since not in drops["explanation"]
