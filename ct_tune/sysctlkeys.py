"""Sysctl key names and the values the kernel lets each key hold.

Both are knowledge about the kernel's sysctl tables, needed by the readers (a value
outside its key's type is corrupt input, not a fact), by the rules (which name keys
by their short name) and by the writers (nothing is rendered or written that the
kernel would reject or silently wrap).  It imports nothing from ct_tune, so every
layer may use it without import circles.

Sources: net/netfilter/nf_conntrack_standalone.c (nf_ct_sysctl_table: proc_dointvec
and proc_dointvec_minmax for the table size keys, proc_dointvec_jiffies for the
timeouts, proc_dou8vec_minmax 0..1 for the flags since 5.13), kernel/sysctl.c
(do_proc_dointvec_jiffies_conv refuses a value above INT_MAX / HZ),
nf_conntrack_core.c nf_ct_alloc_hashtable (bucket count times the pointer size must
fit), net/ipv4/sysctl_net_ipv4.c (tcp_keepalive_*).
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1
#: the largest HZ a distribution kernel is built with: a timeout above INT_MAX / HZ
#: makes proc_dointvec_jiffies fail with EINVAL, so writes stay below it on any HZ
MAX_HZ = 1000

_PREFIXES = ("net.netfilter.", "net.ipv4.", "net.")

#: the conntrack keys ct-tune may write: a rule's parameter, a live key in a state file
WRITABLE_KEY = re.compile(r"^(net\.netfilter\.nf_conntrack_[a-z0-9_]+|net\.nf_conntrack_max"
                          r"|net\.ipv4\.netfilter\.ip_conntrack_[a-z0-9_]+)$")

#: The old names of the same keys: the ip_conntrack module (2.6.x before nf_conntrack)
#: and nf_conntrack's compatibility names (CONFIG_NF_CONNTRACK_PROC_COMPAT).
OLD_PREFIX = "net.ipv4.netfilter.ip_conntrack_"


@functools.lru_cache(maxsize=4096)
def short_name(key: str) -> str:
    """The name rules use for a sysctl (its name under net.netfilter, net.ipv4 or net);
    an old net.ipv4.netfilter.ip_conntrack_X name stands for nf_conntrack_X."""
    if key.startswith(OLD_PREFIX):
        return "nf_conntrack_" + key[len(OLD_PREFIX):]
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def full_name(short: str) -> str:
    """The sysctl key a short name stands for (tcp_keepalive_* live under net.ipv4)."""
    if short.startswith("tcp_keepalive_"):
        return f"net.ipv4.{short}"
    return f"net.netfilter.{short}"


class KeySpec(NamedTuple):
    """What a key may hold when read (anything else is corrupt input) and what ct-tune
    may write to it (a narrower range: what every supported kernel accepts as meant)."""

    read_min: int
    read_max: int
    write_min: int
    write_max: int
    what: str

    def read_problem(self, value: int) -> str | None:
        """Why a value read from the host cannot be right, or None."""
        if value < self.read_min:
            return f"{value} is below {self.read_min}: not a valid {self.what}"
        if value > self.read_max:
            return f"{value} is above {self.read_max:,}: not a valid {self.what}"
        return None

    def write_problem(self, value: object) -> str | None:
        """Why a value must not be written, or None."""
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{value!r} is not an integer ({self.what})"
        if not self.write_min <= value <= self.write_max:
            return (f"{value} is outside {self.write_min:,}..{self.write_max:,} "
                    f"({self.what})")
        return None


_COUNT = KeySpec(0, INT_MAX, 0, INT_MAX, "entry count (int, 0 means unlimited for max)")
_BUCKETS = KeySpec(1, INT_MAX, 1, INT_MAX // 8, "hash bucket count")
_EXPECT = KeySpec(0, INT_MAX, 1, INT_MAX, "expectation limit")
_TIMEOUT = KeySpec(0, INT_MAX, 1, INT_MAX // MAX_HZ, "timeout in seconds")
_FLAG = KeySpec(0, INT_MAX, 0, 1, "0/1 flag")
_U8 = KeySpec(0, INT_MAX, 0, 255, "small integer")
_LONG = KeySpec(0, LONG_MAX, 0, LONG_MAX, "byte count")

_EXACT = {
    "nf_conntrack_max": _COUNT,
    "nf_conntrack_count": _COUNT,
    "nf_conntrack_buckets": _BUCKETS,
    "nf_conntrack_expect_max": _EXPECT,
    "nf_conntrack_tcp_max_retrans": _U8,
    "nf_conntrack_log_invalid": _U8,
    "nf_conntrack_events": _U8,
    "nf_conntrack_frag6_high_thresh": _LONG,
    "nf_conntrack_frag6_low_thresh": _LONG,
    "tcp_keepalive_time": _TIMEOUT,
    "tcp_keepalive_intvl": _TIMEOUT,
    "tcp_keepalive_probes": _U8,
}
_FLAGS = {"nf_conntrack_acct", "nf_conntrack_timestamp", "nf_conntrack_checksum",
          "nf_conntrack_tcp_loose", "nf_conntrack_tcp_be_liberal",
          "nf_conntrack_tcp_ignore_invalid_rst", "nf_conntrack_helper", "nf_log_all_netns",
          "nf_hooks_lwtunnel"}


@functools.lru_cache(maxsize=4096)
def spec(key: str) -> KeySpec | None:
    """The value range of a known integer key (full or short name); None for others."""
    short = short_name(key)
    if short in _EXACT:
        return _EXACT[short]
    if short in _FLAGS:
        return _FLAG
    if short.startswith("nf_conntrack_") and "timeout" in short:
        return _TIMEOUT
    return None
