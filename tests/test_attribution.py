"""ct_tune/attribution.py on flow summaries built the way a live sample is (flowgen)."""

from __future__ import annotations

from ct_tune import attribution


def _flows(classes: dict, by_l4: dict | None = None) -> dict:
    total = sum(c["entries"] for c in classes.values())
    return {"entries_estimated": total, "by_l4": by_l4 or {}, "top_dports": [],
            "classes": classes}


def _cls(entries: int, timeout: int, key: str, ports: dict, idle_bins: dict) -> dict:
    return {"entries": entries, "timeout": timeout, "timeout_key": "net.netfilter." + key,
            "idle_bin_seconds": 1, "idle_histogram": idle_bins, "idle_ports": [ports]}


def test_a_timeout_that_holds_nothing_frees_nothing_and_unknown_without_sample():
    flows = _flows({"udp/unreplied": _cls(100, 600, "nf_conntrack_udp_timeout", {"53": 100},
                                          {str(i): 1 for i in range(0, 600, 6)})})
    r = attribution.relief(flows, "nf_conntrack_tcp_timeout_established", 86400)
    assert r == {"entries": 0, "projected": 0, "freed": 0, "share": 0.0, "of_table": 0.0}
    assert attribution.relief(None, "nf_conntrack_udp_timeout", 30) is None
    # 100 entries spread evenly over 600 s of idle: at 30 s only the 5 youngest stay
    held = attribution.held_by(attribution.attribution(flows, {"nf_conntrack_udp_timeout": 30}),
                               "net.netfilter.nf_conntrack_udp_timeout")
    assert held["non_default"] and held["factor"] == 20.0
    assert held["freed"] == 95 and held["freed_share"] == 0.95


def test_a_port_is_named_only_past_the_threshold():
    flows = _flows({"udp/unreplied": _cls(200000, 30, "nf_conntrack_udp_timeout",
                                          {"2194": 4, "53": 10}, {"0": 200000})})
    assert attribution.dominant_port(flows, "udp/unreplied", 0.5) is None
    flows["classes"]["udp/unreplied"]["idle_ports"] = [{"53": 150000}]
    assert attribution.dominant_port(flows, "udp/unreplied", 0.5) == [53, 150000, 0.75, 0]


def test_notrack_rules_for_a_tunnel_and_for_gre():
    wg = _flows({"udp/stream": _cls(800, 120, "nf_conntrack_udp_timeout_stream",
                                    {"51820": 800}, {"0": 800}),
                 "tcp/ESTABLISHED": _cls(200, 432000, "nf_conntrack_tcp_timeout_established",
                                         {"22": 200}, {"0": 200})})
    c = attribution.notrack_candidate(wg, 0.5)
    assert (c["kind"], c["port"], c["stateless"]) == ("WireGuard", 51820, True)
    assert "nft add rule inet ct_tune_raw prerouting udp dport 51820 notrack" in c["nft"]
    assert "ip6tables -t raw -A OUTPUT -p udp --sport 51820 -j CT --notrack" in c["iptables"]
    gre = _flows({"gre": _cls(900, 30, "nf_conntrack_gre_timeout", {}, {"0": 900})},
                 by_l4={"gre": 900})
    c = attribution.notrack_candidate(gre, 0.5)
    assert c["proto"] == "gre"
    assert "nft add rule inet ct_tune_raw output meta l4proto gre notrack" in c["nft"]
    assert "iptables -t raw -A PREROUTING -p gre -j CT --notrack" in c["iptables"]
    assert attribution.notrack_candidate(wg, 0.9) is None


def test_protocol_mix_names_the_majority():
    flows = _flows({}, by_l4={"tcp": 70, "udp": 30})
    flows["entries_estimated"] = 100
    flows["top_dports"] = [[53, 25], [443, 60]]
    assert attribution.protocol_mix(flows) == {"udp": 0.3, "tcp": 0.7, "dns": 0.25,
                                               "major": "tcp"}
    assert attribution.protocol_mix(None) is None


def test_forwarding_is_read_from_either_family_and_a_corrupt_value_is_a_problem(tmp_path):
    from conftest import materialize

    from ct_tune import facts

    roots = materialize("defaults-16g", tmp_path)
    v4 = roots.procfs / "sys/net/ipv4/ip_forward"
    v6 = roots.procfs / "sys/net/ipv6/conf/all/forwarding"
    v6.parent.mkdir(parents=True, exist_ok=True)
    v4.write_text("0\n")
    v6.write_text("0\n")
    assert facts.collect(roots)["host"]["forwarding"] is False
    v6.write_text("1\n")
    assert facts.collect(roots)["host"]["forwarding"] is True
    v4.write_text("yes\n")
    data = facts.collect(roots)
    assert data["host"]["forwarding"] is None
    assert any(e["path"] == str(v4) and "expected 0 or 1" in e["problem"]
               for e in data["errors"])
