"""Boot configuration against the running kernel: the helpers, old snapshots, the live host."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from ct_tune import drift, engine, expr, facts, profiles, ruleset

MAX = "net.netfilter.nf_conntrack_max"
EST = "net.netfilter.nf_conntrack_tcp_timeout_established"
PERSIST_RULES = ("sysctl-drift", "not-persisted", "conntrack-early-load", "sysctl-override",
                 "sysctl-unknown-key")

HOST = {"kernel_version": [6, 18, 44], "mem_total_bytes": 16 * 1024**3, "pointer_size": 8}
MODULE = {"builtin": False, "initial_netns": True, "loaded": True}


def persist(*assignments: tuple, **extra) -> dict:
    """A persist fact from (key, value, file, line[, optional]) in reading order."""
    rows = [{"key": k, "value": v, "file": f, "line": n, "optional": bool(rest and rest[0])}
            for k, v, f, n, *rest in assignments]
    return {"root": "/", "files": sorted({r["file"] for r in rows}), "assignments": rows,
            "sysctl": {r["key"]: r for r in rows}, "early_load": [], "modprobe": {},
            "udev_sysctl_rules": [], "links": {}, **extra}


def live(**values) -> dict:
    """Live values by short name, kernel defaults for a 16 GiB 6.18 host unless given."""
    base = dict(drift.KERNEL_DEFAULTS, nf_conntrack_max=262144, nf_conntrack_buckets=262144,
                nf_conntrack_expect_max=4096, nf_conntrack_udp_timeout_stream=120,
                nf_conntrack_acct=0, nf_conntrack_timestamp=0)
    base.update(values)
    return base


# --- drift -----------------------------------------------------------------------------------

def test_drift_compares_numbers_as_numbers_and_text_normalised():
    p = persist((MAX, "0262144", "/etc/sysctl.d/a.conf", 1),
                (EST, "86400", "/etc/sysctl.d/a.conf", 2),
                ("net.netfilter.nf_conntrack_x", "a   b", "/etc/sysctl.d/a.conf", 3))
    got = drift.drift(p, live(nf_conntrack_x="a\tb"))
    assert got == [{"key": EST, "live": 432000, "configured": 86400,
                    "file": "/etc/sysctl.d/a.conf", "line": 2, "via": None, "writable": None}]


def test_drift_uses_the_winning_assignment_and_names_the_link_target():
    p = persist((MAX, "1048576", "/etc/sysctl.d/90-ct.conf", 1),
                (MAX, "65536", "/etc/sysctl.d/99-sysctl.conf", 7),
                links={"/etc/sysctl.d/99-sysctl.conf": "/etc/sysctl.conf"})
    (d,) = drift.drift(p, live(nf_conntrack_max=1048576), {"nf_conntrack_max": False})
    assert (d["configured"], d["file"], d["line"], d["via"], d["writable"]) == (
        65536, "/etc/sysctl.conf", 7, "/etc/sysctl.d/99-sysctl.conf", False)


def test_drift_skips_keys_that_do_not_exist_live():
    # module not loaded: nothing to compare (the early-load rule covers why)
    p = persist((MAX, "1048576", "/etc/sysctl.d/a.conf", 1))
    assert drift.drift(p, {"tcp_keepalive_time": 7200}) == []
    assert drift.drift(None, live()) == []


def test_outside_the_initial_namespace_only_global_keys_come_from_boot():
    """'ip netns exec' sees the host's sysctl.d, which boot applies to the host's namespace:
    a per-namespace key it sets is neither drift nor persisted here."""
    p = persist((MAX, "524288", "/etc/sysctl.d/a.conf", 1),
                (EST, "86400", "/etc/sysctl.d/a.conf", 2))
    netns = {**MODULE, "initial_netns": False}
    assert [d["key"] for d in drift.drift(p, live(), None, netns)] == [MAX]
    assert [d["key"] for d in drift.drift(p, live(), None, MODULE)] == [MAX, EST]
    lost = drift.unpersisted(live(nf_conntrack_tcp_timeout_established=86400), p, HOST, netns)
    assert [(d["key"], d["default"]) for d in lost] == [(EST, 432000)]
    assert drift.unpersisted(live(nf_conntrack_tcp_timeout_established=86400), p, HOST,
                             MODULE) == []


def test_net_nf_conntrack_max_is_compared_with_the_same_value():
    p = persist(("net.nf_conntrack_max", "524288", "/etc/sysctl.d/a.conf", 1))
    assert drift.drift(p, live(nf_conntrack_max=524288)) == []
    assert drift.drift(p, live())[0]["live"] == 262144


# --- overridden ------------------------------------------------------------------------------

def test_overridden_names_the_winner_and_only_the_differing_losers():
    p = persist((MAX, "1048576", "/etc/sysctl.d/10-a.conf", 1),
                (MAX, "524288", "/etc/sysctl.d/20-b.conf", 1),
                (MAX, "524288 ", "/usr/lib/sysctl.d/30-c.conf", 4),
                (EST, "86400", "/etc/sysctl.d/10-a.conf", 2),
                (EST, "86400", "/etc/sysctl.d/20-b.conf", 2))
    assert drift.overridden(p) == [{
        "key": MAX,
        "wins": {"value": 524288, "file": "/usr/lib/sysctl.d/30-c.conf", "line": 4,
                 "via": None},
        "loses": [{"value": 1048576, "file": "/etc/sysctl.d/10-a.conf", "line": 1,
                   "via": None}],
    }]
    assert drift.overridden(None) == []


# --- defaults and unpersisted ----------------------------------------------------------------

def test_boot_defaults_on_a_16g_host_match_the_kernel():
    d = drift.boot_defaults(HOST, MODULE, persist(), live())
    assert (d["nf_conntrack_max"], d["nf_conntrack_buckets"], d["nf_conntrack_expect_max"]) == (
        262144, 262144, 4096)
    assert d["nf_conntrack_tcp_timeout_established"] == 432000
    assert d["nf_conntrack_udp_timeout_stream"] == 120
    assert d["tcp_keepalive_time"] == 7200


@pytest.mark.parametrize(("version", "stream"), [([4, 19, 0], 180), ([5, 18, 3], 180),
                                                 ([5, 19, 0], None), ([6, 1, 0], 120)])
def test_udp_stream_default_by_release(version, stream):
    d = drift.boot_defaults({**HOST, "kernel_version": version}, MODULE, persist(), live())
    assert d.get("nf_conntrack_udp_timeout_stream") == stream


def test_pre_5_15_kernel_uses_factor_4():
    host = {**HOST, "kernel_version": [4, 19, 0], "mem_total_bytes": 8 * 1024**3 - 200000 * 1024}
    d = drift.boot_defaults(host, MODULE, persist(), live())
    assert (d["nf_conntrack_buckets"], d["nf_conntrack_max"], d["nf_conntrack_expect_max"]) == (
        65536, 262144, 1024)


def test_32_bit_defaults_size_from_all_ram_not_lowmem():
    # nf_conntrack_init_start() uses totalram_pages(): MemTotal, highmem included
    host = {"kernel_version": [5, 10, 0], "mem_total_bytes": 4 * 1024**3 - 60000 * 1024,
            "pointer_size": 4, "low_total_bytes": 870000 * 1024}
    d = drift.boot_defaults(host, MODULE, persist(), live())
    assert (d["nf_conntrack_buckets"], d["nf_conntrack_max"]) == (16384, 65536)


def test_modprobe_options_set_the_boot_defaults_unless_built_in():
    opts = {"hashsize": {"value": "65536", "file": "/etc/modprobe.d/ct.conf"},
            "expect_hashsize": {"value": "100", "file": "/etc/modprobe.d/ct.conf"},
            "acct": {"value": "Y", "file": "/etc/modprobe.d/ct.conf"}}
    d = drift.boot_defaults(HOST, MODULE, persist(modprobe=opts), live())
    assert (d["nf_conntrack_buckets"], d["nf_conntrack_max"]) == (65536, 8 * 65536)
    assert (d["nf_conntrack_expect_max"], d["nf_conntrack_acct"]) == (400, 1)
    builtin = drift.boot_defaults(HOST, {**MODULE, "builtin": True}, persist(modprobe=opts),
                                  live())
    assert (builtin["nf_conntrack_max"], builtin["nf_conntrack_acct"]) == (262144, 0)


def test_factor_8_without_a_persisted_hashsize_leaves_table_sizes_unjudged():
    d = drift.boot_defaults(HOST, MODULE, persist(),
                            live(nf_conntrack_max=524288, nf_conntrack_buckets=65536))
    assert "nf_conntrack_max" not in d and "nf_conntrack_buckets" not in d
    assert "nf_conntrack_expect_max" not in d


def test_unpersisted_lists_live_values_no_file_sets():
    got = drift.unpersisted(live(nf_conntrack_max=1048576, nf_conntrack_udp_timeout=60,
                                 tcp_keepalive_time=600, nf_conntrack_tcp_timeout_close=5),
                            persist((EST, "432000", "/etc/sysctl.d/a.conf", 1),
                                    ("net.netfilter.nf_conntrack_tcp_timeout_close", "5",
                                     "/etc/sysctl.d/a.conf", 2)),
                            HOST, MODULE)
    # established and close are set by a file (close to the live value): not lost
    assert got == [
        {"key": "net.ipv4.tcp_keepalive_time", "live": 600, "default": 7200, "shrinks": False},
        {"key": MAX, "live": 1048576, "default": 262144, "shrinks": True},
        {"key": "net.netfilter.nf_conntrack_udp_timeout", "live": 60, "default": 30,
         "shrinks": False},
    ]


def test_unlimited_max_shrinks_and_a_lowered_max_does_not():
    (d,) = drift.unpersisted(live(nf_conntrack_max=0), persist(), HOST, MODULE)
    assert d["shrinks"] is True
    (d,) = drift.unpersisted(live(nf_conntrack_max=131072), persist(), HOST, MODULE)
    assert d["shrinks"] is False


def test_global_keys_belong_to_the_host_in_a_container():
    container = {**MODULE, "initial_netns": False}
    got = drift.unpersisted(live(nf_conntrack_max=1048576, nf_conntrack_udp_timeout=60),
                            persist(), HOST, container)
    assert [d["key"] for d in got] == ["net.netfilter.nf_conntrack_udp_timeout"]


def test_unpersisted_needs_persist_facts():
    assert drift.unpersisted(live(nf_conntrack_max=1), None, HOST, MODULE) == []


# --- early load ------------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "conntrack", "missing"), [
    ({}, MODULE, True),
    ({}, {**MODULE, "builtin": None}, True),
    ({}, {**MODULE, "builtin": True}, False),
    ({"early_load": [{"module": "nf_conntrack", "file": "/etc/modules"}]}, MODULE, False),
    ({"udev_sysctl_rules": ["/etc/udev/rules.d/50-ct.rules"]}, MODULE, False),
])
def test_early_load_missing(extra, conntrack, missing):
    p = persist((MAX, "1", "/etc/sysctl.d/a.conf", 1), **extra)
    el = drift.early_load(p, conntrack)
    assert el["configured"] == [MAX] and el["missing"] is missing


def test_keepalive_keys_do_not_need_the_module():
    p = persist(("net.ipv4.tcp_keepalive_time", "600", "/etc/sysctl.d/a.conf", 1))
    assert drift.early_load(p, MODULE)["missing"] is False
    assert drift.early_load(None, MODULE) is None


# --- unknown ---------------------------------------------------------------------------------

CONF = "/etc/sysctl.d/90-ct.conf"


def _unknown(*assignments: tuple, conntrack: dict = MODULE, sysctl: dict | None = None,
             **extra) -> list[dict]:
    return drift.unknown(persist(*assignments, **extra), live() if sysctl is None else sysctl,
                         conntrack)


def test_unknown_names_a_typo_with_the_live_key_it_was_meant_to_be():
    got = _unknown((MAX, "524288", CONF, 1),
                   ("net.netfilter.nf_conntrack_tcp_timeout_establised", " 7440", CONF, 2))
    assert got == [{"key": "net.netfilter.nf_conntrack_tcp_timeout_establised",
                    "configured": 7440, "file": CONF, "line": 2, "via": None,
                    "optional": False, "suggestion": EST}]


@pytest.mark.parametrize("key", ["net.netfilter.nf_conntrack_helper",
                                 "net.netfilter.nf_conntrack_events_retry_timeout",
                                 "net.netfilter.nf_conntrack_dccp_timeout_request"])
def test_a_removed_key_gets_no_suggestion(key):
    # compared whole, nf_conntrack_helper is 0.79 close to nf_conntrack_events: the shared
    # prefix must not count
    sysctl = live(nf_conntrack_events=1, nf_conntrack_count=0, nf_conntrack_generic_timeout=600)
    (u,) = _unknown((key, "1", CONF, 1), sysctl=sysctl)
    assert (u["key"], u["suggestion"]) == (key, None)


def test_unknown_reports_every_assignment_in_reading_order_where_the_admin_edits_it():
    typo = "net.netfilter.nf_conntrack_udp_timeout_strem"
    got = _unknown((typo, "60", "/etc/sysctl.d/10-a.conf", 3),
                   (typo, "90", "/etc/sysctl.d/99-sysctl.conf", 7),
                   links={"/etc/sysctl.d/99-sysctl.conf": "/etc/sysctl.conf"})
    assert [(u["file"], u["line"], u["via"], u["configured"]) for u in got] == [
        ("/etc/sysctl.d/10-a.conf", 3, None, 60),
        ("/etc/sysctl.conf", 7, "/etc/sysctl.d/99-sysctl.conf", 90)]
    assert {u["suggestion"] for u in got} == {"net.netfilter.nf_conntrack_udp_timeout_stream"}


def test_unknown_keeps_the_optional_mark_of_each_line():
    helper = "net.netfilter.nf_conntrack_helper"
    got = _unknown((helper, "0", CONF, 1, True), (helper, "0", CONF, 2))
    assert [u["optional"] for u in got] == [True, False]


def test_glob_patterns_are_never_unknown():
    got = _unknown(("net.netfilter.nf_conntrack_tcp_timeout_*", "60", CONF, 1),
                   ("net.netfilter.nf_conntrack_dccp_timeout_?", "60", CONF, 2),
                   ("net.netfilter.nf_conntrack_sctp_[ab]", "60", CONF, 3))
    assert got == []


def test_unknown_is_empty_while_the_module_is_not_loaded():
    typo = ("net.netfilter.nf_conntrack_tcp_timeout_establised", "7440", CONF, 1)
    assert _unknown(typo, conntrack={**MODULE, "loaded": False},
                    sysctl={"tcp_keepalive_time": 7200}) == []
    assert _unknown(typo, conntrack={}, sysctl={}) == []
    assert drift.unknown(None, live(), MODULE) == []


@pytest.mark.parametrize("initial", [True, False, None])
def test_net_nf_conntrack_max_is_never_unknown(initial):
    # absent outside the initial namespace, but the same (read-only) global setting there:
    # not a misspelling, and net.netfilter.nf_conntrack_max would not be writable either
    conntrack = {**MODULE, "initial_netns": initial}
    assert _unknown(("net.nf_conntrack_max", "262144", CONF, 1), conntrack=conntrack) == []
    (u,) = _unknown(("net.nf_conntrack_maxx", "262144", CONF, 1), conntrack=conntrack)
    assert u["suggestion"] == MAX


def test_keepalive_keys_are_looked_up_under_net_ipv4():
    assert _unknown(("net.ipv4.tcp_keepalive_time", "600", CONF, 1)) == []
    (u,) = _unknown(("net.ipv4.tcp_keepalive_tme", "600", CONF, 1))
    assert u["suggestion"] == "net.ipv4.tcp_keepalive_time"
    # a snapshot without net.ipv4 (not read) cannot tell
    no_ipv4 = {k: v for k, v in live().items() if not k.startswith("tcp_")}
    assert _unknown(("net.ipv4.tcp_keepalive_tme", "600", CONF, 1), sysctl=no_ipv4) == []


def test_a_live_key_whose_value_could_not_be_parsed_still_exists():
    assert _unknown(("net.netfilter.nf_conntrack_x", "1", CONF, 1),
                    sysctl=live(nf_conntrack_x=None)) == []


def test_unknown_is_a_rule_helper():
    assert expr.HELPERS["unknown"] is drift.unknown


# --- rules -----------------------------------------------------------------------------------

def _findings(data: dict) -> dict:
    profile = profiles.get(profiles.load(), "default")
    return {f.rule: f for f in engine.evaluate(ruleset.load(), data, profile)}


def test_rules_skip_snapshots_without_persist(tree):
    data = facts.collect(tree("defaults-16g"))
    data["sysctl"][MAX]["value"] = 1048576  # would be "not persisted" with persist facts
    assert "not-persisted" in _findings(data)
    del data["persist"]
    found = _findings(data)
    assert not set(PERSIST_RULES) & set(found)


def _json(*args: str) -> tuple[dict, int]:
    proc = run_cli(*args)
    assert proc.stderr == "", proc.stderr
    return json.loads(proc.stdout), proc.returncode


def test_live_host_audit_agrees_with_collect():
    """ct-tune audit on this host (no --root: /etc, /usr/lib of this machine) does not crash
    and reports what collect's persist facts imply; nothing is written anywhere."""
    collected, rc = _json("collect", "--no-sample")
    assert rc == 0
    report, rc = _json("audit", "--format", "json", "--no-sample")
    assert rc in (0, 1, 2)
    p = collected["persist"]
    assert p["root"] == "/" and report["facts"]["persist"] == p
    found = {f["rule"]: f for f in report["findings"]}
    configured = [a["key"] for a in p["assignments"]]
    module_keys = [k for k in configured if k.startswith(drift.MODULE_KEY_PREFIXES)]
    loaded = collected["conntrack"]["loaded"]
    # this host configures no conntrack key (checked, so the assertions below mean something)
    assert configured == [], configured
    assert "sysctl-override" not in found
    assert ("conntrack-early-load" in found) == bool(module_keys)
    assert ("sysctl-drift" in found) == bool(loaded and configured)
    assert ("sysctl-unknown-key" in found) == bool(loaded and p["files"])
    assert found.get("sysctl-unknown-key", {}).get("severity", "ok") == "ok"
    if loaded:
        ctx = engine.build_context(collected, profiles.get(profiles.load(), "default"))
        lost = drift.unpersisted(ctx["sysctl"], p, ctx["host"], ctx["conntrack"])
        np = found["not-persisted"]
        assert np["evidence"]["lost"] == lost
        assert np["severity"] == ("warning" if any(d["shrinks"] for d in lost)
                                  else "info" if lost else "ok")
