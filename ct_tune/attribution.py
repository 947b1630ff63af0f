"""Which timeouts hold the table, and what changing each would free.

A full table has a cause: some class of flows (protocol/state/flag) is held by some
timeout.  When that timeout is not the kernel's default, the default is the first
candidate change, and the sample's what-if (:mod:`ct_tune.whatif`, Little's law) says
how many entries it would free.  Rules call these pure functions through the expression
sandbox so a warning about a timeout is only given when changing it relieves the table
(a lower established timeout frees nothing on a table of unreplied UDP).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from ct_tune import whatif
from ct_tune.sysctlkeys import short_name


def _total(flows: Mapping[str, Any] | None) -> int:
    if not flows:
        return 0
    return int(flows.get("entries_estimated") or 0)


def relief(flows: Mapping[str, Any] | None, key: str,
           seconds: float | None) -> dict[str, Any] | None:
    """Entries the sampled table would lose with `key` set to `seconds`, and their share of
    the whole sampled table; None without a sample (unknown), zeros when no sampled flow is
    held by `key` (the change frees nothing)."""
    total = _total(flows)
    if not total or seconds is None:
        return None
    result = whatif.whatif(flows, key, seconds)
    if result is None:
        return {"entries": 0, "projected": 0, "freed": 0, "share": 0.0, "of_table": 0.0}
    freed = max(0, result["entries"] - result["projected"])
    return {
        "entries": result["entries"],
        "projected": result["projected"],
        "freed": freed,
        "share": round(result["entries"] / total, 4),
        "of_table": round(freed / total, 4),
    }


def attribution(flows: Mapping[str, Any] | None,
                defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every timeout key that holds sampled entries: its classes, entries and share of the
    table, its value against the kernel default (`defaults`, by short name: drift's
    boot_defaults), and the relief of returning it to the default; largest relief first,
    then largest share."""
    total = _total(flows)
    if not flows or not total:
        return []
    by_key: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for name, cls in flows.get("classes", {}).items():
        by_key.setdefault(short_name(cls["timeout_key"]), []).append((name, cls))
    out = []
    for short, classes in by_key.items():
        entries = sum(c["entries"] for _, c in classes)
        timeout = max(c["timeout"] for _, c in classes)
        default = defaults.get(short)
        non_default = isinstance(default, int) and default != timeout
        r = relief(flows, short, default) if non_default else None
        oldest = whatif.oldest_idle([c for _, c in classes])
        out.append({
            "key": short,
            "classes": [n for n, _ in sorted(classes, key=lambda nc: -nc[1]["entries"])],
            "entries": entries,
            "share": round(entries / total, 4),
            "timeout": timeout,
            "default": default,
            "non_default": non_default,
            "factor": round(timeout / default, 2) if non_default and default else None,
            "freed": r["freed"] if r else 0,
            "freed_share": r["of_table"] if r else 0.0,
            "projected": r["projected"] if r else entries,
            "oldest": oldest,
            # raised, and every entry it holds quieter than the default: the sample cannot
            # show what the default frees yet (0 now), see whatif.oldest_idle
            "young": bool(non_default and default and timeout > default
                          and oldest is not None and oldest <= default),
        })
    out.sort(key=lambda a: (-a["freed"], -a["entries"]))
    return out


def held_by(attr: list[Mapping[str, Any]], key: str) -> Mapping[str, Any] | None:
    """The attribution row of one timeout key (short or full name), None when no sampled
    entry is held by it."""
    short = short_name(key)
    return next((a for a in attr if a["key"] == short), None)


def dominant_port(flows: Mapping[str, Any] | None, name: str,
                  threshold: float) -> list[Any] | None:
    """The destination port that holds at least `threshold` of one class's sampled entries,
    as [port, entries, share of the class, margin of entries]; None when no port does (a
    port with 4 of 200,000 entries is not the cause of anything).  The margin is the 95 %
    sampling margin of the port's count (0 for a whole table): a sample cut short by
    --sample-limit estimates it like every other count."""
    if not flows:
        return None
    cls = flows.get("classes", {}).get(name)
    if not cls or not cls.get("entries"):
        return None
    top = whatif.class_ports(cls, 1)
    if not top:
        return None
    port, n = top[0]
    share = n / cls["entries"]
    if share < threshold:
        return None
    return [port, n, round(share, 4), whatif.detail_margin(flows, n)]


def protocol_mix(flows: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The sampled table's protocol mix, to tell the UDP DNS race from the TCP SNAT port
    race when the insert counters alone cannot: shares of UDP, TCP and of destination port
    53, and the protocol holding the majority ("udp", "tcp" or None); None without a
    sample."""
    total = _total(flows)
    if not flows or not total:
        return None
    by_l4 = flows.get("by_l4") or {}
    udp = (by_l4.get("udp") or 0) / total
    tcp = (by_l4.get("tcp") or 0) / total
    dns = sum(n for p, n in flows.get("top_dports") or [] if int(p) == 53) / total
    major = "udp" if udp > 0.5 else "tcp" if tcp > 0.5 else None
    return {"udp": round(udp, 4), "tcp": round(tcp, 4), "dns": round(dns, 4), "major": major}


#: UDP ports of traffic that needs no connection state where it is terminated or merely
#: routed (no NAT, no stateful filtering): a local resolver and tunnel endpoints.
#: IANA: 53 domain; 4789 VXLAN (RFC 7348); 6081 GENEVE (RFC 8926); 51820 WireGuard's
#: customary port (wg(8) examples).
STATELESS_UDP = {53: "DNS", 4789: "VXLAN", 6081: "GENEVE", 51820: "WireGuard"}


def _ports(flows: Mapping[str, Any], prefix: str) -> tuple[Counter[str], int]:
    ports: Counter[str] = Counter()
    entries = 0
    for name, cls in flows.get("classes", {}).items():
        if name.split("/")[0] != prefix:
            continue
        entries += cls["entries"]
        for bin_ports in cls["idle_ports"]:
            ports.update(bin_ports)
    return ports, entries


def notrack_candidate(flows: Mapping[str, Any] | None,
                      threshold: float) -> dict[str, Any] | None:
    """The class of traffic that holds at least `threshold` of the sampled table and could
    skip tracking: GRE, UDP to a stateless-safe port (:data:`STATELESS_UDP`), or failing
    those one UDP or TCP destination port; with the exact raw-table rules for it.  None
    when nothing dominates (or without a sample)."""
    total = _total(flows)
    if not flows or not total:
        return None
    gre = (flows.get("by_l4") or {}).get("gre") or 0
    if gre / total >= threshold:
        return _with_rules({"proto": "gre", "port": None, "kind": "GRE tunnel",
                            "stateless": True, "entries": gre,
                            "margin": whatif.sample_margin(flows, gre),
                            "share": round(gre / total, 4)})
    found = []
    for proto in ("udp", "tcp"):
        ports, _ = _ports(flows, proto)
        for port, n in ports.most_common(3):
            if n / total >= threshold:
                kind = STATELESS_UDP.get(int(port)) if proto == "udp" else None
                found.append({"proto": proto, "port": int(port),
                              "kind": kind or f"{proto.upper()} port {port}",
                              "stateless": kind is not None,
                              "entries": n, "margin": whatif.detail_margin(flows, n),
                              "share": round(n / total, 4)})
    if not found:
        return None
    found.sort(key=lambda c: (not c["stateless"], -c["entries"]))
    return _with_rules(found[0])


def _with_rules(cand: dict[str, Any]) -> dict[str, Any]:
    """nft (inet family: IPv4 and IPv6) and iptables/ip6tables raw-table rules that keep the
    class out of the table in both directions: its packets to the port and the replies from
    it, arriving (prerouting) and locally sent (output)."""
    proto, port = cand["proto"], cand["port"]
    if port is None:
        nft_matches = ["meta l4proto gre"]
        ipt_matches = [f"-p {proto}"]
    else:
        nft_matches = [f"{proto} dport {port}", f"{proto} sport {port}"]
        ipt_matches = [f"-p {proto} --dport {port}", f"-p {proto} --sport {port}"]
    nft = ["nft add table inet ct_tune_raw",
           "nft add chain inet ct_tune_raw prerouting "
           "'{ type filter hook prerouting priority raw; policy accept; }'",
           "nft add chain inet ct_tune_raw output "
           "'{ type filter hook output priority raw; policy accept; }'"]
    ipt = []
    for chain in ("prerouting", "output"):
        for m in nft_matches:
            nft.append(f"nft add rule inet ct_tune_raw {chain} {m} notrack")
    for tool in ("iptables", "ip6tables"):
        for chain in ("PREROUTING", "OUTPUT"):
            for m in ipt_matches:
                ipt.append(f"{tool} -t raw -A {chain} {m} -j CT --notrack")
    return {**cand, "nft": nft, "iptables": ipt}
