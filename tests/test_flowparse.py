"""Property tests for the conntrack line parsers (hypothesis)."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ct_tune.flowparse import parse_line, scan_line
from ct_tune.flows import FlowStats

ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(
    lambda xs: ":".join(f"{x:x}" for x in xs))
port = st.integers(0, 65535).map(str)
TCP_STATES = ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
              "TIME_WAIT", "CLOSE", "SYN_SENT2"]


@st.composite
def entries(draw):
    v6 = draw(st.booleans())
    addr = ipv6 if v6 else ipv4
    l4, num = draw(st.sampled_from([("tcp", 6), ("udp", 17), ("icmp", 1), ("sctp", 132),
                                    ("gre", 47), ("unknown", 99)]))
    if v6 and l4 == "icmp":
        l4, num = "icmpv6", 58
    state = None
    if l4 == "tcp":
        state = draw(st.sampled_from(TCP_STATES))
    elif l4 == "sctp":
        state = draw(st.sampled_from(["ESTABLISHED", "CLOSED", "COOKIE_WAIT"]))
    src, dst = draw(addr), draw(addr)
    if l4 in ("icmp", "icmpv6"):
        orig = {"src": src, "dst": dst, "type": "8", "code": "0", "id": draw(port)}
        reply = {"src": dst, "dst": src, "type": "0", "code": "0", "id": orig["id"]}
    else:
        sp, dp = draw(port), draw(port)
        orig = {"src": src, "dst": dst, "sport": sp, "dport": dp}
        reply = {"src": dst, "dst": src, "sport": dp, "dport": sp}
    acct = draw(st.booleans())
    if acct:
        orig |= {"packets": str(draw(st.integers(0, 10**9))),
                 "bytes": str(draw(st.integers(0, 10**12)))}
        reply |= {"packets": "1", "bytes": "60"}
    unreplied = draw(st.booleans())
    tail_flag = draw(st.sampled_from([None, "ASSURED", "OFFLOAD", "HW_OFFLOAD"]))
    extra = {"mark": str(draw(st.integers(0, 2**32 - 1)))}
    if draw(st.booleans()):
        extra["secctx"] = "system_u:object_r:unlabeled_t:s0"
    if draw(st.booleans()):
        extra["zone"] = str(draw(st.integers(0, 65535)))
    if draw(st.booleans()):
        extra["delta-time"] = str(draw(st.integers(0, 10**6)))
    extra["use"] = str(draw(st.integers(1, 9)))
    ttl = draw(st.integers(0, 432000))
    procfs = draw(st.booleans())
    parts = []
    if procfs:
        parts += ["ipv6" if v6 else "ipv4", "10" if v6 else "2"]
    parts += [l4, str(num), str(ttl)] + ([state] if state else [])
    parts += [f"{k}={v}" for k, v in orig.items()]
    parts += ["[UNREPLIED]"] if unreplied else []
    parts += [f"{k}={v}" for k, v in reply.items()]
    parts += [f"[{tail_flag}]"] if tail_flag else []
    parts += [f"{k}={v}" for k, v in extra.items()]
    flags = {f for f in ("UNREPLIED" if unreplied else None, tail_flag) if f}
    sep = draw(st.sampled_from([" ", "  ", "     "]))
    expected = dict(l3="ipv6" if v6 else "ipv4", l4=l4, l4num=num, ttl=ttl, state=state,
                    orig=orig, reply=reply, flags=flags, extra=extra)
    return sep.join(parts) + "\n", expected


@settings(max_examples=400)
@given(entries())
def test_every_well_formed_line_round_trips(case):
    line, want = case
    flow = parse_line(line)
    assert flow.l3 == want["l3"] and flow.l4 == want["l4"] and flow.l4num == want["l4num"]
    assert flow.ttl == want["ttl"] and flow.state == want["state"]
    assert flow.orig == want["orig"] and flow.reply == want["reply"]
    assert flow.flags == want["flags"]
    assert flow.extra == want["extra"]


@settings(max_examples=400)
@given(entries())
def test_fast_scan_agrees_with_full_parse(case):
    line, _ = case
    flow = parse_line(line)
    l3, l4, state, ttl, dst, dport, bits, zone = scan_line(line)
    assert (l3, l4, state, ttl, dst, dport) == (flow.l3, flow.l4, flow.state, flow.ttl,
                                                flow.orig["dst"], flow.orig.get("dport"))
    names = {n for i, n in enumerate(("UNREPLIED", "ASSURED", "OFFLOAD", "HW_OFFLOAD"))
             if bits & (1 << i)}
    assert names == flow.flags
    assert zone == flow.zone


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_from_the_aggregator(data):
    stats = FlowStats({"nf_conntrack_tcp_timeout_established": 432000})
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    stats.feed(lines)
    assert stats.entries + stats.malformed <= len(lines)
    stats.summary()


@given(st.text(max_size=300))
def test_parsers_raise_only_value_error(text):
    for fn in (parse_line, scan_line):
        with contextlib.suppress(ValueError):
            fn(text)


def test_truncated_lines_are_counted_not_fatal():
    good = ("ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=5 "
            "dport=5432 src=10.0.0.2 dst=10.0.0.1 sport=5432 dport=5 [ASSURED] mark=0 use=2\n")
    stats = FlowStats({"nf_conntrack_tcp_timeout_established": 432000})
    stats.feed([good, good[:40] + "\n", "garbage\n", good])
    s = stats.summary()
    assert s["entries_read"] == 2 and s["malformed"] == 2
    assert s["top_dports"] == [[5432, 2]]
    assert s["classes"]["tcp/ESTABLISHED"]["idle_histogram"] == {"0": 2}
