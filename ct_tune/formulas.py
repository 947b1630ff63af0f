"""Kernel sizing arithmetic for nf_conntrack, as pure functions.

These are the named helpers that rule files call from their sandboxed
expressions.  Each mirrors what the kernel does (net/netfilter/nf_conntrack_core.c,
nf_conntrack_init_start and nf_ct_alloc_hashtable) so that a recommendation is
rounded the way the kernel would use it, and so that rules never need to
re-derive kernel behaviour in a data file.
"""

from __future__ import annotations

import math

from ct_tune import kernelmodel

GIB = 1024**3
PAGE_SIZE = 4096

#: Smallest random chain limit before an insert is refused as "chaintoolong"
#: (MAX_CHAINLEN 64 minus up to 14 random, kernel 5.15+: 50..79 per the reference).
CHAINTOOLONG_MIN = 50

#: kube-proxy's conntrack sizing (pkg/proxy/conntrack, cmd/kube-proxy defaults).
KUBE_PROXY_MAX_PER_CORE = 32768
KUBE_PROXY_MIN = 131072
KUBE_PROXY_CAP = 1048576


def bucket_granularity(pointer_size: int, page_size: int = PAGE_SIZE) -> int:
    """Buckets come in whole pages of list heads: 512 per page on 64-bit, 1024 on 32-bit."""
    return max(1, page_size // pointer_size)


def round_buckets(buckets: int, pointer_size: int, page_size: int = PAGE_SIZE) -> int:
    """Round a bucket count up as nf_ct_alloc_hashtable() does (roundup to a page of heads)."""
    gran = bucket_granularity(pointer_size, page_size)
    return max(gran, -(-int(buckets) // gran) * gran)


#: The release assumed when a snapshot has none: the newest era (what the old
#: single model assumed); kernelmodel answers None for eras it cannot pin.
NEWEST = (6, 0)


def kernel_default_buckets(
    mem_bytes: int, pointer_size: int, kernel: tuple[int, ...] | list[int] | None = None
) -> int | None:
    """The bucket count the kernel picks at module load when no hashsize= is given,
    by kernel era (:func:`ct_tune.kernelmodel.boot_buckets`); None where the era is
    not pinned (3.19 above 4 GiB)."""
    return kernelmodel.boot_buckets(kernel or NEWEST, mem_bytes, pointer_size)


def default_max_factor(kernel: tuple[int, ...] | list[int] | None, hashsize_given: bool) -> int:
    """Entries per bucket the kernel uses for the default max.

    8 when hashsize= was given at module load (the old factor, kept so an explicit
    hashsize does not shrink the table); otherwise 1 on 5.15+ and 4 before.
    """
    if hashsize_given:
        return 8
    e = kernelmodel.era(kernel or NEWEST)
    return e.factor if e else 1


def kernel_default_max(
    mem_bytes: int,
    pointer_size: int,
    kernel: tuple[int, ...] | list[int] | None = None,
    hashsize: int | None = None,
) -> int | None:
    """nf_conntrack_max as the kernel sets it at module load, by kernel era
    (:func:`ct_tune.kernelmodel.boot_max`); None where the era is not pinned."""
    return kernelmodel.boot_max(kernel or NEWEST, mem_bytes, pointer_size, hashsize)


def kernel_default_expect_max(
    mem_bytes: int,
    pointer_size: int,
    kernel: tuple[int, ...] | list[int] | None = None,
    hashsize: int | None = None,
    expect_hashsize: int | None = None,
) -> int | None:
    """nf_conntrack_expect_max as the kernel sets it at module load, by kernel era."""
    return kernelmodel.boot_expect_max(kernel or NEWEST, mem_bytes, pointer_size, hashsize,
                                       expect_hashsize)


def buckets_writable(kernel: tuple[int, ...] | list[int] | None) -> bool | None:
    """Whether the kernel lets sysctl write nf_conntrack_buckets in the initial namespace
    (4.7+); None when the release is unknown."""
    return kernelmodel.buckets_writable(kernel)


def kmalloc_size(n: int) -> int:
    """The kmalloc size class an allocation of n bytes lands in (SLUB power-of-two classes
    plus the 96 and 192 byte caches)."""
    if n <= 0:
        return 0
    for size in (8, 16, 32, 64, 96, 128, 192):
        if n <= size:
            return size
    return 1 << (n - 1).bit_length()


def extension_bytes(acct: bool = False, timestamp: bool = False, nat: bool = False) -> int:
    """Approximate per-entry memory of conntrack extensions allocated beside the slab object.

    Extensions share one krealloc'd block of at least NF_CT_EXT_PREALLOC (128)
    bytes (nf_conntrack_extend.c): a small header plus 32 bytes of accounting
    counters (struct nf_conn_acct), 16 of timestamps (struct nf_conn_tstamp) and
    about 16 for NAT.  Zero when none of them is on.
    """
    payload = 32 * bool(acct) + 16 * bool(timestamp) + 16 * bool(nat)
    return kmalloc_size(max(128, 16 + payload)) if payload else 0


def entry_bytes(object_size: int, extensions: int = 0) -> int:
    """Memory one tracked connection costs: slab object plus its extension block."""
    return int(object_size) + int(extensions)


def table_memory(max_entries: int, buckets: int, per_entry: int, pointer_size: int) -> int:
    """Bytes a full table costs: every entry plus one pointer per bucket."""
    return int(max_entries) * int(per_entry) + int(buckets) * int(pointer_size)


def max_for_budget(budget_bytes: int, per_entry: int, pointer_size: int, per_bucket: int) -> int:
    """The largest max whose full table (with buckets at per_bucket entries each) fits a budget."""
    cost = per_entry + pointer_size / max(1, per_bucket)
    return max(0, int(budget_bytes // cost))


def buckets_for_max(max_entries: int, pointer_size: int, per_bucket: int = 1) -> int:
    """Buckets needed so a full table holds at most per_bucket entries per bucket (rounded)."""
    return round_buckets(math.ceil(max(1, max_entries) / max(1, per_bucket)), pointer_size)


def round_max(max_entries: int, pointer_size: int) -> int:
    """Round a recommended max up to a whole page of buckets, so factor-1 sizing is exact."""
    return round_buckets(max_entries, pointer_size)


def chain_length(max_entries: int, buckets: int) -> float:
    """Average chain length of a full table: each entry is hashed twice (both directions)."""
    if not buckets:
        return math.inf
    return 2.0 * max_entries / buckets


def keepalive_window(time: int, intvl: int, probes: int) -> int:
    """Seconds from the last data until TCP keepalive declares a silent peer dead."""
    return int(time) + int(intvl) * int(probes)


def kube_proxy_max(cpus: int) -> int:
    """The nf_conntrack_max kube-proxy would set: 32768 per CPU, at least 131072, at most 1Mi."""
    return min(max(KUBE_PROXY_MAX_PER_CORE * max(1, int(cpus)), KUBE_PROXY_MIN), KUBE_PROXY_CAP)


#: Lowmem on a 32-bit i386 kernel without highmem tuning (the 896 MiB direct map).
LOWMEM_I386 = 896 * 1024**2


def memory_base(mem_total: int | None, low_total: int | None, pointer_size: int | None) -> int:
    """Memory a conntrack table competes for.

    Slab objects must live in lowmem, so on 32-bit hosts the budget is LowTotal
    (or the i386 896 MiB direct map when meminfo does not show it), not RAM.
    """
    total = int(mem_total or 0)
    if pointer_size == 4:
        return int(low_total) if low_total else min(total, LOWMEM_I386)
    return total


def usage(count: int, max_entries: int) -> float | None:
    """Fraction of the table in use; None when max is 0 (unlimited)."""
    if not max_entries:
        return None
    return count / max_entries


def human_bytes(n: float | int | None) -> str:
    """IEC bytes for explanations (e.g. 64.0 MiB)."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | int | None) -> str:
    """Seconds in the two largest units (432000 -> '5 d', 7875 -> '2 h 11 min')."""
    if seconds is None:
        return "unknown"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size} {unit}")
            s %= size
        if len(parts) == 2 or (parts and s == 0):
            break
    return " ".join(parts)


def margin95(estimate: float, read: int, total: int) -> int:
    """The 95 % margin of a count estimated from a sample of `read` entries of a table of
    `total`: a proportion p = estimate / total observed in a simple random sample drawn
    without replacement (normal approximation, finite population correction), times
    total.  0 when the whole table was read."""
    if not read or total <= read:
        return 0
    p = min(1.0, max(0.0, estimate / total))
    fpc = math.sqrt((total - read) / max(1, total - 1))
    return math.ceil(1.96 * math.sqrt(p * (1 - p) / read) * fpc * total)
