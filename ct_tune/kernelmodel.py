"""What nf_conntrack does at boot, by kernel era, as pure functions.

The kernel sized its default table differently over the years, made
nf_conntrack_buckets writable only in 4.7, and made the global keys read-only
outside the initial network namespace only in 5.13.  One model for every kernel
made ct-tune say false things on older hosts ("a reboot brings back 262,144"
on a 3.10 host whose live 65,536 *is* the default; "set it on the host" on a
host whose buckets are read-only because of its kernel, not a container).

Every answer carries its source (kernel file and function, or commit), and an
era ct-tune has not pinned answers None ("unknown") rather than a guess.  Each
era below cites what it was read from:

* 2.6.24 - 3.18 (2.6.32 RHEL 6, 3.10 RHEL 7, 3.13 Ubuntu 14.04; the hash became
  hlist heads in 2.6.24, hence "a max factor of four ... the same max as with the
  old struct list_heads" in the source; older kernels are not modelled: None):
  nf_conntrack_init_init_net() (2.6.x) / nf_conntrack_init_start() (3.x):
  buckets = RAM / 16384 / sizeof(struct hlist_head), 16384 when RAM > 1 GiB,
  at least 32; max = 4 x buckets (8 x when hashsize= is given).  max is
  computed from the unrounded size: the table (and its page rounding in
  nf_ct_alloc_hashtable) is allocated per namespace afterwards.
* 3.19 - 4.6: the same plus 65536 buckets when RAM > 4 GiB (Marcelo Leitner,
  "netfilter: conntrack: adjust nf_conntrack_buckets default value", authored
  2014-12-03; Documentation/networking/nf_conntrack-sysctl.txt of 4.1 documents
  it).  ct-tune has not pinned whether that commit is in 3.19 or only in 4.0, so
  3.19 above 4 GiB is unknown.
* 4.7 - 5.14: one global table (commit 56d52d4892d0, "netfilter: conntrack: use
  a single hashtable for all namespaces") allocated in nf_conntrack_init_start()
  before max is set, so max = 4 x the page-rounded bucket count; buckets
  writable in the initial namespace (commit 3183ab8997a4, "netfilter:
  conntrack: allow increasing bucket size via sysctl too").
* 5.15 and later (commit d532bcd0b269, "netfilter: conntrack: sanitize table
  size default settings"): 262144 above 4 GiB (64-bit only), 65536 above 1 GiB,
  at least 1024; max = buckets (8 x with hashsize=).

Distribution kernels backport: RHEL 7's 3.10.0-*.el7 shows 16384 buckets and
max 65536 on large hosts and buckets 0444 (as upstream 3.10); ct-tune knows of
no RHEL backport that changes the defaults, and says so in the sources.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

GIB = 1024**3
PAGE_SIZE = 4096

Version = tuple[int, ...]

#: Keys that point at one global variable (nf_conntrack_standalone.c): read-only outside
#: the initial network namespace, per era (netns_readonly).
GLOBAL_KEYS = ("nf_conntrack_max", "nf_conntrack_buckets", "nf_conntrack_expect_max")

#: nf_conntrack_buckets became writable (initial namespace): commit 3183ab8997a4.
BUCKETS_WRITABLE_SINCE = (4, 7)
#: max, expect_max and buckets 0444 outside init_net: commit 2671fa4dc010 (5.13),
#: backported to the 5.4, 5.10, 5.11 and 5.12 stable series.
GLOBAL_RO_IN_NETNS_SINCE = (5, 13)
GLOBAL_RO_BACKPORTED = ((5, 4), (5, 10), (5, 11), (5, 12))
#: /proc/sys/kernel/arch (kernel/utsname_sysctl.c, UTS_PROC_ARCH) appeared in 6.1
#: (Petr Vorel, 2022; follow-up 54de93cd8740 "kernel/utsname_sysctl.c: Add missing
#: enum uts_proc value").
KERNEL_ARCH_SYSCTL_SINCE = (6, 1)

SRC_INIT_OLD = ("net/netfilter/nf_conntrack_core.c: nf_conntrack_init_init_net (2.6.x) / "
                "nf_conntrack_init_start (3.x): RAM / 16384 / sizeof(struct hlist_head), "
                "16384 above 1 GiB, at least 32, max = 4 x buckets (8 x with hashsize=)")
SRC_4G = ("net/netfilter/nf_conntrack_core.c: 65536 buckets above 4 GiB (Marcelo Leitner, "
          "'netfilter: conntrack: adjust nf_conntrack_buckets default value', 2014-12; "
          "documented in Documentation/networking/nf_conntrack-sysctl.txt since 4.1)")
SRC_GLOBAL = ("net/netfilter/nf_conntrack_core.c: nf_conntrack_init_start allocates the one "
              "global table (commit 56d52d4892d0) before max = factor x rounded buckets")
SRC_515 = ("net/netfilter/nf_conntrack_core.c: nf_conntrack_init_start, commit d532bcd0b269 "
           "'netfilter: conntrack: sanitize table size default settings' (5.15): 262144 above "
           "4 GiB on 64-bit, 65536 above 1 GiB, at least 1024, max = buckets (8 x with hashsize=)")
SRC_EXPECT = ("net/netfilter/nf_conntrack_expect.c: nf_conntrack_expect_init, expect_max = "
              "4 x max(1, buckets / 256) unless expect_hashsize= is given")
SRC_BUCKETS_RW = ("net/netfilter/nf_conntrack_standalone.c: nf_conntrack_buckets writable "
                  "(nf_conntrack_hash_sysctl) in the initial namespace since 4.7, commit "
                  "3183ab8997a4; before it 0444 everywhere: only the hashsize module parameter "
                  "(/sys/module/nf_conntrack/parameters/hashsize, modprobe.d) resizes the table")
SRC_NETNS_RO = ("net/netfilter/nf_conntrack_standalone.c: nf_conntrack_max, expect_max and "
                "buckets 0444 outside init_net since 5.13 (commit 2671fa4dc010, backported to "
                "5.4/5.10/5.11/5.12 stable); before it only buckets (4.7+), or all of them when "
                "the namespace belongs to a non-initial user namespace")
SRC_RHEL = ("RHEL kernels (.elN): no Red Hat backport changing these defaults is known to "
            "ct-tune; the upstream era of the base version is used")


class Era(NamedTuple):
    """How one range of kernels sizes the table at module load."""

    since: Version
    mid_cap: int          # buckets when RAM > 1 GiB
    big_cap: int | None   # buckets when RAM > 4 GiB (None: no such cap)
    big_64bit_only: bool  # the > 4 GiB cap needs BITS_PER_LONG >= 64
    floor: int
    factor: int           # max = factor x buckets without hashsize=
    max_from_rounded: bool  # max computed after nf_ct_alloc_hashtable rounded buckets
    source: str


ERAS: tuple[Era, ...] = (
    # before 2.6.24 the hash was of struct list_head (two pointers), 8192 above 1 GiB,
    # max = 8 x buckets (and the ip_conntrack module had its own copy): not modelled
    Era((2, 6, 24), 16384, None, False, 32, 4, False, SRC_INIT_OLD),
    Era((3, 19), 16384, 65536, False, 32, 4, False, SRC_INIT_OLD + "; " + SRC_4G),
    Era((4, 7), 16384, 65536, False, 32, 4, True, SRC_INIT_OLD + "; " + SRC_4G + "; " + SRC_GLOBAL),
    Era((5, 15), 65536, 262144, True, 1024, 1, True, SRC_515),
)

#: Releases where ct-tune does not know which era applies above 4 GiB.
UNPINNED_4G = ((3, 19),)

_ARCH_POINTER = {
    8: {"x86_64", "amd64", "aarch64", "arm64", "ppc64", "ppc64le", "s390x", "mips64",
        "riscv64", "sparc64", "loongarch64", "ia64", "alpha"},
    4: {"i386", "i486", "i586", "i686", "x86", "armv7l", "armv6l", "armv5tel", "armhf",
        "armel", "arm", "mips", "mipsel", "ppc", "s390", "riscv32", "sparc"},
}

#: Debian/Ubuntu flavour suffixes (4.19.0-27-amd64, 5.10.0-28-686-pae) -> uname machine.
_FLAVOURS = {"amd64": "x86_64", "686-pae": "i686", "686": "i686", "486": "i486",
             "arm64": "aarch64", "armmp": "armv7l", "armmp-lpae": "armv7l",
             "powerpc64le": "ppc64le", "s390x": "s390x", "rt-amd64": "x86_64",
             "cloud-amd64": "x86_64", "cloud-arm64": "aarch64", "rt-arm64": "aarch64"}


def pointer_size_for_arch(arch: str | None) -> int | None:
    """Pointer size in bytes for a uname machine name; None when not known."""
    if not arch:
        return None
    name = arch.strip().lower()
    for size, names in _ARCH_POINTER.items():
        if name in names:
            return size
    return None


def arch_from_release(release: str | None) -> str | None:
    """The machine a release string names, when it names one.

    RHEL/CentOS/Fedora end in '.ARCH' (3.10.0-1160.el7.x86_64, 2.6.32-754.el6.i686);
    Debian ends in a flavour (4.19.0-27-amd64, 5.10.0-28-686-pae).  Ubuntu's
    '-generic' and most vendor kernels name none: None.
    """
    if not release:
        return None
    text = release.strip()
    last = text.split(".")[-1].lower()
    if pointer_size_for_arch(last):
        return last
    for flavour in sorted(_FLAVOURS, key=len, reverse=True):
        if text.lower().endswith("-" + flavour):
            return _FLAVOURS[flavour]
    return None


def distribution(release: str | None) -> str | None:
    """A distribution hint from the release string: 'rhel7' for .el7, else None."""
    m = re.search(r"\.el(\d+)", release or "")
    return f"rhel{m.group(1)}" if m else None


def _v(kernel: Any) -> Version | None:
    if not kernel:
        return None
    try:
        return tuple(int(x) for x in list(kernel)[:3])
    except (TypeError, ValueError):
        return None


def era(kernel: Any) -> Era | None:
    """The sizing era of a release; None before 2.6.24 or when the version is unknown."""
    v = _v(kernel)
    if v is None or v < ERAS[0].since:
        return None
    return [e for e in ERAS if v >= e.since][-1]


def _granularity(pointer_size: int) -> int:
    return max(1, PAGE_SIZE // pointer_size)


def _round(buckets: int, pointer_size: int) -> int:
    """nf_ct_alloc_hashtable(): roundup(size, PAGE_SIZE / sizeof(struct hlist_nulls_head))."""
    gran = _granularity(pointer_size)
    return max(gran, -(-int(buckets) // gran) * gran)


def _raw_buckets(e: Era, v: Version, mem: int, ptr: int) -> int | None:
    """The unrounded size nf_conntrack_init_start() picks; None when not pinned."""
    size = mem // 16384 // ptr
    if mem > 4 * GIB and (v[:2] in UNPINNED_4G):
        return None
    if e.big_cap is not None and mem > 4 * GIB and (ptr >= 8 or not e.big_64bit_only):
        size = e.big_cap
    elif mem > GIB:
        size = e.mid_cap
    return max(size, e.floor)


def _boot_buckets(kernel: Any, mem_bytes: int | None, pointer_size: int | None,
                 hashsize: int | None = None) -> int | None:
    """nf_conntrack_buckets after the module loads; None when ct-tune cannot know it."""
    v, e = _v(kernel), era(kernel)
    if v is None or e is None or not pointer_size:
        return None
    if hashsize:
        return _round(hashsize, pointer_size)
    if not mem_bytes:
        return None
    raw = _raw_buckets(e, v, int(mem_bytes), pointer_size)
    return None if raw is None else _round(raw, pointer_size)


def _boot_max(kernel: Any, mem_bytes: int | None, pointer_size: int | None,
             hashsize: int | None = None) -> int | None:
    """nf_conntrack_max after the module loads (factor x buckets, 8 x with hashsize=)."""
    v, e = _v(kernel), era(kernel)
    if v is None or e is None or not pointer_size:
        return None
    factor = 8 if hashsize else e.factor
    if hashsize:
        raw: int | None = int(hashsize)
    elif mem_bytes:
        raw = _raw_buckets(e, v, int(mem_bytes), pointer_size)
    else:
        raw = None
    if raw is None:
        return None
    return factor * (_round(raw, pointer_size) if e.max_from_rounded else raw)


def _boot_expect_max(kernel: Any, mem_bytes: int | None, pointer_size: int | None,
                    hashsize: int | None = None, expect_hashsize: int | None = None) -> int | None:
    """nf_conntrack_expect_max after load: 4 x expect_hashsize, which defaults to
    buckets / 256 (at least 1).  From 3.x to 4.6 nf_conntrack_expect_init() ran on
    the unrounded global size; 2.6.x (per-namespace init after the table was
    allocated) and 4.7+ on the rounded one."""
    if expect_hashsize:
        return 4 * int(expect_hashsize)
    v, e = _v(kernel), era(kernel)
    if v is None or e is None or not pointer_size:
        return None
    rounded = _boot_buckets(kernel, mem_bytes, pointer_size, hashsize)
    if rounded is None:
        return None
    if v[:2] >= (4, 7) or v[:2] < (3, 0):
        size = rounded
    else:
        size = int(hashsize) if hashsize else _raw_buckets(e, v, int(mem_bytes or 0), pointer_size)
        if size is None:
            return None
    return 4 * max(1, size // 256)


def _either_pointer(fn: Any, kernel: Any, mem_bytes: int | None, pointer_size: int | None,
                    *args: Any) -> int | None:
    """fn's answer; with the pointer size unknown, the answer both 4 and 8 give (above
    1 GiB most eras do not depend on it), else None."""
    if pointer_size:
        return fn(kernel, mem_bytes, pointer_size, *args)
    both = {fn(kernel, mem_bytes, p, *args) for p in (4, 8)}
    return both.pop() if len(both) == 1 else None


def boot_buckets(kernel: Any, mem_bytes: int | None, pointer_size: int | None,
                 hashsize: int | None = None) -> int | None:
    """nf_conntrack_buckets after the module loads; None when ct-tune cannot know it."""
    return _either_pointer(_boot_buckets, kernel, mem_bytes, pointer_size, hashsize)


def boot_max(kernel: Any, mem_bytes: int | None, pointer_size: int | None,
             hashsize: int | None = None) -> int | None:
    """nf_conntrack_max after the module loads (factor x buckets, 8 x with hashsize=)."""
    return _either_pointer(_boot_max, kernel, mem_bytes, pointer_size, hashsize)


def boot_expect_max(kernel: Any, mem_bytes: int | None, pointer_size: int | None,
                    hashsize: int | None = None, expect_hashsize: int | None = None) -> int | None:
    """nf_conntrack_expect_max after the module loads (see _boot_expect_max)."""
    return _either_pointer(_boot_expect_max, kernel, mem_bytes, pointer_size, hashsize,
                           expect_hashsize)


def buckets_writable(kernel: Any) -> bool | None:
    """Whether nf_conntrack_buckets can be written by sysctl in the initial namespace."""
    v = _v(kernel)
    if v is None:
        return None
    return v[:2] >= BUCKETS_WRITABLE_SINCE


def netns_readonly(kernel: Any) -> list[str] | None:
    """Keys 0444 in a non-initial network namespace (owned by the initial user
    namespace), by release; None where stable backports make the release alone
    undecidable (5.4 - 5.12: the file mode tells)."""
    v = _v(kernel)
    if v is None:
        return None
    if v[:2] >= GLOBAL_RO_IN_NETNS_SINCE:
        return ["nf_conntrack_buckets", "nf_conntrack_expect_max", "nf_conntrack_max"]
    if v[:2] in GLOBAL_RO_BACKPORTED:
        return None
    # buckets: 0444 outside init_net since 4.7 (3183ab8997a4), 0444 everywhere before
    return ["nf_conntrack_buckets"]


def readonly_reason(short: str, writable: bool | None, kernel: Any,
                    initial_netns: bool | None, mount_ro: bool = False,
                    not_root: bool = False) -> str | None:
    """Why a key cannot be written here: 'kernel' (the kernel makes it 0444 in every
    namespace, e.g. buckets before 4.7), 'netns' (a non-initial network namespace),
    'read-only-mount', 'not-root'; None when it is writable or nothing tells."""
    if writable:
        return None
    if mount_ro:
        return "read-only-mount"
    if not_root:
        return "not-root"
    if short == "nf_conntrack_buckets" and buckets_writable(kernel) is False:
        return "kernel"
    if initial_netns is False and short in GLOBAL_KEYS:
        return "netns"
    return None


def _label(e: Era) -> str:
    """'2.6.24 to 3.18', ..., '5.15 and later'."""
    i = ERAS.index(e)
    first = ".".join(map(str, e.since))
    if i + 1 == len(ERAS):
        return f"{first} and later"
    nxt = ERAS[i + 1].since
    last = f"{nxt[0]}.{nxt[1] - 1}" if nxt[1] > 0 else "?"
    return f"{first} to {last}"


def describe(kernel: Any, release: str | None, mem_bytes: int | None,
             pointer_size: int | None, hashsize: int | None = None,
             expect_hashsize: int | None = None) -> dict[str, Any]:
    """Every answer with its source, for --explain and the JSON (None: unknown)."""
    e = era(kernel)
    dist = distribution(release)
    sources = [e.source] if e else []
    sources += [SRC_EXPECT, SRC_BUCKETS_RW, SRC_NETNS_RO]
    if dist and dist.startswith("rhel"):
        sources.append(SRC_RHEL)
    return {
        "era": _label(e) if e else None,
        "distribution": dist,
        "buckets": boot_buckets(kernel, mem_bytes, pointer_size, hashsize),
        "max": boot_max(kernel, mem_bytes, pointer_size, hashsize),
        "expect_max": boot_expect_max(kernel, mem_bytes, pointer_size, hashsize,
                                      expect_hashsize),
        "factor": (8 if hashsize else e.factor) if e else None,
        "buckets_writable": buckets_writable(kernel),
        "netns_readonly": netns_readonly(kernel),
        "sources": sources,
    }
