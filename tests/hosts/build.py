"""Regenerate the captured host trees used by the tests.

`_live/` is `ct-tune capture` of a real 6.18 x86_64 VM (24 GiB, 2 CPUs).  Each
other tree starts from it and changes only what the scenario needs, so every
file a tree holds is either real or a documented edit of a real one.  Run
`python tests/hosts/build.py` after changing a scenario; the trees are committed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).parent
NF = "proc/sys/net/netfilter"
STAT_HEADER_NEW = ("entries  clashres found new invalid ignore delete chainlength insert "
                   "insert_failed drop early_drop icmp_error  expect_new expect_create "
                   "expect_delete search_restart")
STAT_HEADER_OLD = ("entries  searched found new invalid ignore delete delete_list insert "
                   "insert_failed drop early_drop icmp_error  expect_new expect_create "
                   "expect_delete search_restart")


def stat_table(header: str, cpus: list[dict[str, int]]) -> str:
    names = header.split()
    lines = [header]
    for cpu in cpus:
        lines.append(" ".join(f"{cpu.get(n, 0):08x}" for n in names))
    return "\n".join(lines) + "\n"


def meminfo(total_kb: int, low_kb: int | None = None) -> str:
    text = f"MemTotal:       {total_kb} kB\nMemFree:        {total_kb // 2} kB\n"
    if low_kb is not None:
        text += f"HighTotal:      {total_kb - low_kb} kB\nLowTotal:       {low_kb} kB\n"
    return text


class Tree:
    def __init__(self, name: str) -> None:
        self.root = HERE / name
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(HERE / "_live", self.root)

    def set(self, rel: str, text: str | int, mode: int | None = None) -> Tree:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{text}\n" if isinstance(text, int) else text)
        self._mode(rel, mode if mode is not None else 0o644)
        return self

    def nf(self, key: str, value: int | str, mode: int | None = None) -> Tree:
        return self.set(f"{NF}/{key}", value if isinstance(value, int) else f"{value}\n", mode)

    def remove(self, rel: str) -> Tree:
        path = self.root / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        lines = (self.root / "MODES").read_text().splitlines()
        keep = [ln for ln in lines if not (ln.split()[0] == rel or ln.startswith(rel + "/"))]
        (self.root / "MODES").write_text("".join(f"{ln}\n" for ln in keep))
        return self

    def _mode(self, rel: str, mode: int) -> None:
        lines = [ln for ln in (self.root / "MODES").read_text().splitlines()
                 if ln.split()[0] != rel]
        lines.append(f"{rel} {mode:04o}")
        (self.root / "MODES").write_text("".join(f"{ln}\n" for ln in sorted(lines)))

    def host(self, *, mem_kb: int, cpus: str = "0-7", arch: str | None = "x86_64",
             release: str = "6.18.44-fc-v657", low_kb: int | None = None) -> Tree:
        """arch=None: no /proc/sys/kernel/arch, as on every kernel before 6.1."""
        self.set("proc/meminfo", meminfo(mem_kb, low_kb))
        self.set("sys/devices/system/cpu/online", f"{cpus}\n")
        if arch is None:
            self.remove("proc/sys/kernel/arch")
        else:
            self.set("proc/sys/kernel/arch", f"{arch}\n", mode=0o444)
        return self.set("proc/sys/kernel/osrelease", f"{release}\n", mode=0o444)

    def table(self, *, max_: int, buckets: int, count: int, hashsize: int | None = None) -> Tree:
        self.nf("nf_conntrack_max", max_).nf("nf_conntrack_buckets", buckets)
        self.nf("nf_conntrack_count", count, mode=0o444)
        self.set("proc/sys/net/nf_conntrack_max", max_)
        self.set("sys/module/nf_conntrack/parameters/hashsize", hashsize or buckets, mode=0o600)
        return self

    def stat(self, cpus: list[dict[str, int]], header: str = STAT_HEADER_NEW) -> Tree:
        return self.set("proc/net/stat/nf_conntrack", stat_table(header, cpus), mode=0o444)

    def era(self, version: tuple[int, int], *, buckets_mode: int, expect_max: int) -> Tree:
        """Keys the release has, as that kernel shows them (each edit cites its source):

        * nf_conntrack_buckets 0444 in the initial namespace before 4.7 (writable since
          commit 3183ab8997a4, nf_conntrack_standalone.c nf_conntrack_hash_sysctl);
        * nf_conntrack_expect_max = 4 x (buckets / 256) (nf_conntrack_expect.c,
          nf_conntrack_expect_init);
        * no nf_conntrack_tcp_ignore_invalid_rst before 5.14, no nf_hooks_lwtunnel before
          5.15, no nf_log_all_netns before 4.11 (the releases that added them);
        * udp_timeout_stream 180 s up to 5.18 (nf_conntrack_proto_udp.c udp_timeouts[]).
        """
        self.set(f"{NF}/nf_conntrack_buckets",
                 (self.root / NF / "nf_conntrack_buckets").read_text(), mode=buckets_mode)
        self.nf("nf_conntrack_expect_max", expect_max)
        for key, since in (("nf_conntrack_tcp_ignore_invalid_rst", (5, 14)),
                           ("nf_hooks_lwtunnel", (5, 15)), ("nf_log_all_netns", (4, 11))):
            if version < since:
                self.remove(f"{NF}/{key}")
        if version <= (5, 18):
            self.nf("nf_conntrack_udp_timeout_stream", 180)
        return self


GIB_KB = 1024 * 1024


def build() -> None:
    # 16 GiB, 8 CPUs, kernel defaults (5.15+: 262144 buckets above 4 GiB, max = buckets).
    Tree("defaults-16g").host(mem_kb=16337060).table(max_=262144, buckets=262144, count=1234) \
        .stat([{"entries": 1234, "found": 10}] * 8)

    # Nearly full with drops and early drops on some CPUs.
    Tree("nearly-full-drops").host(mem_kb=16337060).table(
        max_=262144, buckets=262144, count=251000).stat(
        [{"entries": 251000, "drop": 0x120, "early_drop": 0x3000, "insert_failed": 3}] * 4
        + [{"entries": 251000}] * 4)

    # The keepalive trap: established timeout 30 min, below the 2 h 11 min keepalive window.
    Tree("keepalive-trap").host(mem_kb=16337060).table(
        max_=262144, buckets=262144, count=5000).nf(
        "nf_conntrack_tcp_timeout_established", 1800)

    # 512 MiB VM with max raised to 2 million by a copy-pasted tuning guide.
    Tree("tiny-memory-huge-max").host(mem_kb=499000, cpus="0").table(
        max_=2000000, buckets=131072, count=800)

    # hashsize=16384 given at module load then max raised to 1 Mi: chains of 128.
    Tree("long-chains").host(mem_kb=16337060).table(
        max_=1048576, buckets=16384, count=600000, hashsize=16384).stat(
        [{"entries": 600000, "chainlength": 0x40}] * 8)

    # Module not loaded: no net/netfilter, no stat, no slab, no module parameters.
    t = Tree("module-not-loaded").host(mem_kb=16337060)
    for rel in (NF, "proc/sys/net/nf_conntrack_max", "proc/net/stat", "sys/module/nf_conntrack",
                "sys/kernel/slab/nf_conntrack", "proc/slabinfo"):
        t.remove(rel)

    # Container / non-initial netns: global keys 0444, no net.nf_conntrack_max,
    # slabinfo and module parameters not readable.
    t = Tree("container-netns").host(mem_kb=16337060).table(
        max_=262144, buckets=262144, count=3000)
    for key in ("nf_conntrack_max", "nf_conntrack_buckets", "nf_conntrack_expect_max"):
        t.set(f"{NF}/{key}", (t.root / NF / key).read_text(), mode=0o444)
    t.remove("proc/sys/net/nf_conntrack_max").remove("proc/slabinfo")

    # Corrupt value: nf_conntrack_max holds garbage.
    Tree("corrupt-values").host(mem_kb=16337060).nf("nf_conntrack_max", "26214x4")

    # Corrupt stat: a truncated per-CPU line.
    Tree("corrupt-stat").host(mem_kb=16337060).set(
        "proc/net/stat/nf_conntrack", STAT_HEADER_NEW + "\n00000001 00000000 0000\n", mode=0o444)

    # 32-bit i686 with 4 GiB RAM (highmem) and ~870 MiB lowmem, max left at 262144; 5.10 has no
    # kernel/arch: "-686-pae" names the machine.
    Tree("i686-lowmem").host(mem_kb=4 * GIB_KB - 60000, arch=None, cpus="0-3",
                             release="5.10.0-28-686-pae", low_kb=870000).table(
        max_=262144, buckets=65536, count=2000).set("proc/slabinfo", (
            "slabinfo - version: 2.1\n"
            "nf_conntrack        2000   2016    192   21    1 : tunables    0    0    0"
            " : slabdata     96     96      0\n"), mode=0o400)

    # Pre-5.15 kernel (4.19, RHEL 8 / Debian 10 era) on 8 GiB: 65536 buckets, max = 4 x buckets,
    # old stat header, UDP stream 180 s, no tcp_ignore_invalid_rst, no kernel/arch (6.1+):
    # the "-amd64" flavour names the machine.
    Tree("kernel-4.19").host(mem_kb=8 * GIB_KB - 200000, release="4.19.0-27-amd64",
                             arch=None).table(
        max_=262144, buckets=65536, count=40000).era(
        (4, 19), buckets_mode=0o644, expect_max=1024).stat(
        [{"entries": 40000, "searched": 99, "delete_list": 7, "drop": 2}] * 8,
        header=STAT_HEADER_OLD)

    # A container (non-initial netns) on 4.19: no net.nf_conntrack_max (init_net only), buckets
    # 0444 (3183ab8997a4), but max and expect_max still 0644: they became 0444 outside init_net
    # only in 5.13 (commit 2671fa4dc010), so writing them here changes the host's global value.
    t = Tree("kernel-4.19-netns").host(mem_kb=8 * GIB_KB - 200000, release="4.19.0-27-amd64",
                                       arch=None).table(
        max_=262144, buckets=65536, count=3000).era((4, 19), buckets_mode=0o444,
                                                    expect_max=1024)
    t.remove("proc/sys/net/nf_conntrack_max").remove("proc/slabinfo")

    # Kernel eras (ct_tune/kernelmodel.py cites each formula).  Every tree holds the boot
    # defaults that kernel computes for its RAM in nf_conntrack_init_start()
    # (nf_conntrack_init_init_net on 2.6.x), no /proc/sys/kernel/arch (6.1+ only), and
    # the keys of its era (Tree.era).
    #
    # RHEL 6, 2.6.32-754.el6.x86_64, 8 GiB: RAM > 1 GiB -> 16384 buckets, max = 4 x 16384
    # = 65536, expect_max = 4 x 16384/256 = 256; buckets 0444; the nf_conntrack
    # compatibility names (CONFIG_NF_CONNTRACK_PROC_COMPAT) under net/ipv4/netfilter.
    t = Tree("kernel-2.6.32-el6").host(mem_kb=8 * GIB_KB - 150000, arch=None, cpus="0-3",
                                       release="2.6.32-754.35.1.el6.x86_64").table(
        max_=65536, buckets=16384, count=20000).era(
        (2, 6), buckets_mode=0o444, expect_max=256).stat(
        [{"entries": 20000, "searched": 50}] * 4, header=STAT_HEADER_OLD)
    for name, value, mode in (("ip_conntrack_max", 65536, 0o644),
                              ("ip_conntrack_buckets", 16384, 0o444),
                              ("ip_conntrack_count", 20000, 0o444),
                              ("ip_conntrack_tcp_timeout_established", 432000, 0o644)):
        t.set(f"proc/sys/net/ipv4/netfilter/{name}", value, mode=mode)

    # The same on 32-bit: 2.6.32-754.el6.i686, 3 GiB (PAE, ~870 MiB lowmem): RAM > 1 GiB ->
    # 16384 buckets (a whole number of 1024-head pages), max 65536, expect_max 256.
    Tree("kernel-2.6.32-el6-i686").host(
        mem_kb=3 * GIB_KB - 100000, arch=None, cpus="0-1", low_kb=870000,
        release="2.6.32-754.el6.i686").table(max_=65536, buckets=16384, count=3000).era(
        (2, 6), buckets_mode=0o444, expect_max=256).stat(
        [{"entries": 3000}] * 2, header=STAT_HEADER_OLD)

    # RHEL 7, 3.10.0-1160.el7.x86_64, 16 GiB: 16384 buckets (no 4 GiB cap yet), max 65536,
    # expect_max 256, buckets 0444 in the initial namespace.
    Tree("kernel-3.10-el7").host(mem_kb=16 * GIB_KB - 250000, arch=None,
                                 release="3.10.0-1160.119.1.el7.x86_64").table(
        max_=65536, buckets=16384, count=30000).era(
        (3, 10), buckets_mode=0o444, expect_max=256).stat(
        [{"entries": 30000, "searched": 80}] * 8, header=STAT_HEADER_OLD)

    # Ubuntu 14.04, 3.13.0-170-generic, 4 GiB: 16384 buckets, max 65536, expect_max 256,
    # buckets 0444.  "-generic" names no machine: the architecture is unknown here.
    Tree("kernel-3.13-ubuntu").host(mem_kb=4 * GIB_KB - 150000, arch=None, cpus="0-1",
                                    release="3.13.0-170-generic").table(
        max_=65536, buckets=16384, count=5000).era(
        (3, 13), buckets_mode=0o444, expect_max=256).stat(
        [{"entries": 5000}] * 2, header=STAT_HEADER_OLD)

    # Ubuntu 16.04, 4.4.0-210-generic, 8 GiB: RAM > 4 GiB -> 65536 buckets (since 3.19/4.0),
    # max 262144, expect_max 1024, buckets still 0444 (writable from 4.7).
    Tree("kernel-4.4-ubuntu").host(mem_kb=8 * GIB_KB - 180000, arch=None, cpus="0-3",
                                   release="4.4.0-210-generic").table(
        max_=262144, buckets=65536, count=12000).era(
        (4, 4), buckets_mode=0o444, expect_max=1024).stat(
        [{"entries": 12000}] * 4, header=STAT_HEADER_OLD)

    # Ubuntu 20.04, 5.4.0-200-generic, 2 GiB: RAM > 1 GiB -> 16384 buckets, max 65536,
    # expect_max 256, buckets writable.
    Tree("kernel-5.4-ubuntu").host(mem_kb=2 * GIB_KB - 60000, arch=None, cpus="0-1",
                                   release="5.4.0-200-generic").table(
        max_=65536, buckets=16384, count=2000).era(
        (5, 4), buckets_mode=0o644, expect_max=256)

    # Debian 11, 5.10.0-30-amd64, 32 GiB: 65536 buckets, max 262144, expect_max 1024.
    Tree("kernel-5.10-debian").host(mem_kb=32 * GIB_KB - 400000, arch=None,
                                    release="5.10.0-30-amd64").table(
        max_=262144, buckets=65536, count=90000).era(
        (5, 10), buckets_mode=0o644, expect_max=1024)

    # Ubuntu 22.04, 5.15.0-130-generic, 16 GiB: the 5.15 sizing (d532bcd0b269): 262144
    # buckets, max = buckets, expect_max 4096.  The arch is unknown ("-generic"), and
    # above 4 GiB the 262144 cap is for 64-bit only, so the default is not claimed.
    Tree("kernel-5.15-ubuntu").host(mem_kb=16 * GIB_KB - 300000, arch=None,
                                    release="5.15.0-130-generic").table(
        max_=262144, buckets=262144, count=40000).era(
        (5, 15), buckets_mode=0o644, expect_max=4096)

    # RHEL 5 style 2.6.18 with the old ip_conntrack module: no net/netfilter at all, only
    # net/ipv4/netfilter/ip_conntrack_* (ip_conntrack_standalone.c).  8192 buckets above
    # 1 GiB and max = 8 x buckets in that module (ip_conntrack_core.c).
    t = Tree("kernel-2.6.18-ip-conntrack").host(mem_kb=4 * GIB_KB - 100000, arch=None,
                                                 cpus="0-1", release="2.6.18-419.el5")
    for rel in (NF, "proc/sys/net/nf_conntrack_max", "sys/module/nf_conntrack",
                "sys/kernel/slab/nf_conntrack", "proc/slabinfo", "proc/net/stat"):
        t.remove(rel)
    for name, value, mode in (("ip_conntrack_max", 65536, 0o644),
                              ("ip_conntrack_buckets", 8192, 0o444),
                              ("ip_conntrack_count", 9000, 0o444),
                              ("ip_conntrack_tcp_timeout_established", 432000, 0o644),
                              ("ip_conntrack_udp_timeout", 30, 0o644),
                              ("ip_conntrack_generic_timeout", 600, 0o644)):
        t.set(f"proc/sys/net/ipv4/netfilter/{name}", value, mode=mode)


if __name__ == "__main__":
    build()
