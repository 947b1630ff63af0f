"""Captured hosts, audited through the CLI as a user runs it: the findings one would act on."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import run_cli, tree_args

from ct_tune import formulas


def audit_json(roots, *extra: str) -> tuple[dict, int]:
    proc = run_cli("audit", "--format", "json", *tree_args(roots), *extra)
    assert proc.stderr == "", proc.stderr
    return json.loads(proc.stdout), proc.returncode


def by_rule(report: dict) -> dict[str, dict]:
    return {f["rule"]: f for f in report["findings"]}


def test_defaults_16g_only_trims_the_established_timeout(tree):
    report, rc = audit_json(tree("defaults-16g"))
    assert rc == 0 and report["status"] == "ok"
    f = by_rule(report)
    assert f["conntrack-max"]["severity"] == "ok"
    assert f["conntrack-max"]["recommended"] == 262144
    assert f["hash-buckets"]["severity"] == "ok"
    est = f["tcp-timeout-established"]
    assert (est["current"], est["recommended"], est["severity"]) == (432000, 86400, "info")
    # no finding without a reason: close_wait etc. are not in the default profile
    assert "tcp-timeout-close-wait" not in f
    assert not [x for x in report["findings"] if x["severity"] in ("warning", "critical")]


def test_nearly_full_table_with_drops_is_critical_and_stepped_up(tree):
    report, rc = audit_json(tree("nearly-full-drops"))
    assert rc == 2 and report["status"] == "critical"
    f = by_rule(report)
    assert f["conntrack-max"]["severity"] == "critical"
    # 251,000 of 262,144: the count is a lower bound of demand, so max steps up 4x
    # (within the memory budget) rather than to 2x the count as if demand were known
    assert f["conntrack-max"]["recommended"] == 4 * 262144
    assert "demand above the limit is unknown" in f["conntrack-max"]["summary"]
    assert "measure again" in f["conntrack-max"]["summary"]
    # buckets follow the recommended max (factor 1), not the current one
    assert f["hash-buckets"]["recommended"] == 4 * 262144
    assert f["table-drops"]["severity"] == "critical"
    assert f["table-drops"]["evidence"]["drop"] == 4 * 0x120
    assert f["insert-races"]["severity"] == "warning"
    # under pressure the 5-day timeout becomes a warning
    assert f["tcp-timeout-established"]["severity"] == "warning"


def test_keepalive_trap_is_flagged_and_fixed_above_the_window(tree):
    report, rc = audit_json(tree("keepalive-trap"))
    assert rc == 1
    est = by_rule(report)["tcp-timeout-established"]
    assert est["severity"] == "warning"
    assert "keepalive floor" in est["summary"]
    assert est["evidence"]["ka_window"] == 7875
    assert est["recommended"] >= 7875


def test_tiny_memory_with_huge_max_is_critical_and_lowered_to_budget(tree):
    report, rc = audit_json(tree("tiny-memory-huge-max"))
    assert rc == 2
    f = by_rule(report)
    assert f["table-memory"]["severity"] == "critical"
    mx = f["conntrack-max"]
    assert mx["recommended"] < mx["current"]
    assert mx["evidence"]["limited_by_budget"] is True
    # the lowered max still leaves room for today's 800 entries
    assert mx["recommended"] > 800 / 0.5
    # the recommended max fixes the chains, so buckets need no change
    assert f["hash-buckets"]["recommended"] == f["hash-buckets"]["current"]
    assert f["hash-buckets"]["severity"] == "info"


def test_long_chains_with_chaintoolong_drops(tree):
    report, rc = audit_json(tree("long-chains"))
    assert rc == 2
    b = by_rule(report)["hash-buckets"]
    assert b["severity"] == "critical"
    assert b["evidence"]["chain_now"] == 128
    assert b["evidence"]["chaintoolong"] == 8 * 0x40
    assert b["recommended"] >= by_rule(report)["conntrack-max"]["recommended"]


def test_module_not_loaded_says_so_and_nothing_else(tree):
    report, rc = audit_json(tree("module-not-loaded"))
    assert rc == 0
    assert [f["rule"] for f in report["findings"]] == ["module-loaded"]
    assert report["facts"]["conntrack"]["loaded"] is False
    assert report["findings"][0]["evidence"]["default_max"] == 262144


def test_container_namespace_marks_global_keys_as_host_only(tree):
    report, rc = audit_json(tree("container-netns"))
    assert rc == 0
    f = by_rule(report)
    assert report["facts"]["conntrack"]["initial_netns"] is False
    assert "netns-readonly" in f
    assert f["conntrack-max"]["scope"] == "host"
    assert f["hash-buckets"]["scope"] == "host"
    assert f["tcp-timeout-established"]["scope"] == "here"
    assert report["facts"]["sysctl"]["net.netfilter.nf_conntrack_max"]["writable"] is False


def test_container_namespace_recommendation_for_global_key_says_set_on_host(tree):
    roots = tree("container-netns")
    (roots.procfs / "sys/net/netfilter/nf_conntrack_count").write_text("250000\n")
    report, _ = audit_json(roots)
    mx = by_rule(report)["conntrack-max"]
    assert mx["recommended"] > mx["current"]
    assert "set it on the host" in mx["summary"]


@pytest.mark.parametrize(("name", "path", "problem", "rule"), [
    ("corrupt-values", "proc/sys/net/netfilter/nf_conntrack_max",
     "expected an integer, found '26214x4'", "conntrack-max"),
    ("corrupt-stat", "proc/net/stat/nf_conntrack", "line 2: 3 fields, header has 17",
     "table-drops"),
])
def test_corrupt_input_is_one_line_naming_the_file_and_its_findings_are_unknown(
        tree, name, path, problem, rule):
    roots = tree(name)
    proc = run_cli("audit", *tree_args(roots))
    assert proc.returncode == 3
    line = f"ct-tune: {roots.procfs.parent / path}: {problem}"
    assert proc.stderr.strip() == line
    assert proc.stdout.splitlines()[-1].startswith("status: UNKNOWN")
    proc = run_cli("audit", "--format", "json", *tree_args(roots))
    report = json.loads(proc.stdout)
    assert proc.returncode == 3 and report["status"] == "unknown"
    assert proc.stderr.strip() == line
    assert report["errors"] == [line.removeprefix("ct-tune: ")]
    finding = by_rule(report)[rule]
    assert finding["severity"] == "unknown"
    assert finding["unavailable"] == [line.removeprefix("ct-tune: ")]
    assert finding["recommended"] is None


def test_32_bit_host_budgets_against_lowmem(tree):
    report, rc = audit_json(tree("i686-lowmem"))
    assert rc == 1
    assert report["facts"]["host"]["pointer_size"] == 4
    mem = by_rule(report)["table-memory"]
    assert mem["evidence"]["lowmem"] is True
    assert mem["evidence"]["base_mem"] == 870000 * 1024
    assert mem["severity"] in ("warning", "critical")
    mx = by_rule(report)["conntrack-max"]
    assert mx["recommended"] < mx["current"]
    # 32-bit: buckets come in pages of 1024 four-byte heads
    assert mx["recommended"] % 1024 == 0
    assert by_rule(report)["hash-buckets"]["recommended"] % 1024 == 0


def test_pre_5_15_kernel_reads_old_stat_header_and_defaults(tree):
    report, rc = audit_json(tree("kernel-4.19"))
    assert rc == 1  # drops since boot and factor-4 chains are warnings
    facts = report["facts"]
    assert facts["host"]["kernel_version"] == [4, 19, 0]
    assert facts["stat"]["counters"]["searched"] == 8 * 99
    f = by_rule(report)
    assert f["table-drops"]["evidence"]["drop"] == 16
    # max = 4 x buckets, the pre-5.15 default: chains of 8
    assert f["hash-buckets"]["evidence"]["chain_now"] == 8
    assert facts["sysctl"]["net.netfilter.nf_conntrack_udp_timeout_stream"]["value"] == 180


def test_explain_fills_in_the_numbers(tree):
    roots = tree("nearly-full-drops")
    proc = run_cli("audit", "--explain", *tree_args(roots))
    assert proc.returncode == 2
    out = proc.stdout
    assert "251,000 / 0.5 = 502,000" in out
    assert "[CRITICAL] conntrack-max" in out
    assert "sources:" in out and "nf_conntrack_core.c" in out


@pytest.mark.parametrize("profile", ["k8s-node"])
def test_k8s_profile_agrees_with_kube_proxy(tree, profile):
    roots = tree("defaults-16g")
    report, _ = audit_json(roots, "--profile", profile)
    f = by_rule(report)
    assert f["tcp-timeout-close-wait"]["recommended"] == 3600
    assert f["tcp-timeout-established"]["recommended"] == 86400
    # 8 CPUs: kube-proxy would set max(32768 x 8, 131072) = 262144 = current, no fight
    assert f["conntrack-max"]["recommended"] == 262144
    # kube-proxy's hashsize = max / 4: buckets at 262144 already satisfy it
    assert f["hash-buckets"]["recommended"] == 262144


def test_k8s_profile_raises_max_to_what_kube_proxy_would_set(tree):
    roots = tree("defaults-16g")
    (roots.sysfs / "devices/system/cpu/online").write_text("0-15\n")
    report, _ = audit_json(roots, "--profile", "k8s-node")
    mx = by_rule(report)["conntrack-max"]
    assert mx["recommended"] == 16 * 32768
    assert mx["evidence"]["kube"] == 16 * 32768


def test_nat_gateway_profile_keeps_udp_mappings_longer(tree):
    report, _ = audit_json(tree("defaults-16g"), "--profile", "nat-gateway")
    f = by_rule(report)
    assert f["udp-timeout"]["recommended"] == 60
    assert f["udp-timeout-stream"]["recommended"] == 180
    assert f["tcp-timeout-established"]["recommended"] == 21600


def test_corrupt_uptime_names_the_file(tree):
    roots = tree("defaults-16g")
    (roots.procfs / "uptime").write_text("soon 12.0\n")
    proc = run_cli("audit", *tree_args(roots))
    assert proc.returncode == 3  # table-drops turns totals into rates with the uptime
    assert proc.stderr.strip() == (f"ct-tune: {roots.procfs / 'uptime'}: "
                                   "expected seconds since boot, got 'soon 12.0'")
    assert "status: UNKNOWN" in proc.stdout


def test_32_bit_kernel_default_is_sized_from_all_ram_not_lowmem(tree):
    """nf_conntrack_init_start sizes its default from totalram_pages(): highmem counts."""
    roots = tree("i686-lowmem")
    shutil.rmtree(roots.procfs / "sys/net/netfilter")  # module not loaded
    report, _ = audit_json(roots)
    host = report["facts"]["host"]
    ram, low = host["mem_total_bytes"], host["low_total_bytes"]
    version = host["kernel_version"]
    evidence = by_rule(report)["module-loaded"]["evidence"]
    assert evidence["default_buckets"] == formulas.kernel_default_buckets(ram, 4, version)
    assert evidence["default_max"] == formulas.kernel_default_max(ram, 4, version)
    assert evidence["default_max"] != formulas.kernel_default_max(low, 4, version)
