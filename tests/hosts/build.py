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

    def host(self, *, mem_kb: int, cpus: str = "0-7", arch: str = "x86_64",
             release: str = "6.18.44-fc-v657", low_kb: int | None = None) -> Tree:
        self.set("proc/meminfo", meminfo(mem_kb, low_kb))
        self.set("sys/devices/system/cpu/online", f"{cpus}\n")
        self.set("proc/sys/kernel/arch", f"{arch}\n")
        return self.set("proc/sys/kernel/osrelease", f"{release}\n")

    def table(self, *, max_: int, buckets: int, count: int, hashsize: int | None = None) -> Tree:
        self.nf("nf_conntrack_max", max_).nf("nf_conntrack_buckets", buckets)
        self.nf("nf_conntrack_count", count, mode=0o444)
        self.set("proc/sys/net/nf_conntrack_max", max_)
        self.set("sys/module/nf_conntrack/parameters/hashsize", hashsize or buckets, mode=0o600)
        return self

    def stat(self, cpus: list[dict[str, int]], header: str = STAT_HEADER_NEW) -> Tree:
        return self.set("proc/net/stat/nf_conntrack", stat_table(header, cpus), mode=0o444)


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
    t.remove(f"{NF}/nf_log_all_netns")  # registered in init_net only (nf_log.c)

    # 'ip netns exec NS' on a host: a non-initial network namespace that sees the host's
    # /etc.  Checked against 'ip netns exec NS ct-tune capture' on the 6.18 VM: the global
    # keys 0444, no net.nf_conntrack_max and no nf_log_all_netns (initial namespace only),
    # slabinfo and module parameters readable (root), the table (max 524288) as the
    # host's sysctl.d sets it.  That sysctl.d also sets the established timeout, which
    # boot applies to the host's namespace: here it is the kernel default.
    t = Tree("netns-exec").host(mem_kb=16337060).table(max_=524288, buckets=262144, count=40)
    for key in ("nf_conntrack_max", "nf_conntrack_buckets", "nf_conntrack_expect_max"):
        t.set(f"{NF}/{key}", (t.root / NF / key).read_text(), mode=0o444)
    t.remove("proc/sys/net/nf_conntrack_max").remove(f"{NF}/nf_log_all_netns")
    t.set("etc/sysctl.d/90-conntrack.conf", "net.netfilter.nf_conntrack_max = 524288\n"
          "net.netfilter.nf_conntrack_tcp_timeout_established = 86400\n")
    t.set("etc/modules-load.d/nf_conntrack.conf", "nf_conntrack\n")

    # Corrupt value: nf_conntrack_max holds garbage.
    Tree("corrupt-values").host(mem_kb=16337060).nf("nf_conntrack_max", "26214x4")

    # Corrupt stat: a truncated per-CPU line.
    Tree("corrupt-stat").host(mem_kb=16337060).set(
        "proc/net/stat/nf_conntrack", STAT_HEADER_NEW + "\n00000001 00000000 0000\n", mode=0o444)

    # 32-bit i686 with 4 GiB RAM (highmem) and ~870 MiB lowmem, max left at 262144.
    Tree("i686-lowmem").host(mem_kb=4 * GIB_KB - 60000, arch="i686", cpus="0-3",
                             release="5.10.0-28-686-pae", low_kb=870000).table(
        max_=262144, buckets=65536, count=2000).set("proc/slabinfo", (
            "slabinfo - version: 2.1\n"
            "nf_conntrack        2000   2016    192   21    1 : tunables    0    0    0"
            " : slabdata     96     96      0\n"), mode=0o400)

    # Pre-5.15 kernel (4.19, RHEL 8 / Debian 10 era) on 8 GiB: 65536 buckets, max = 4 x buckets,
    # old stat header, UDP stream 180 s, no tcp_ignore_invalid_rst.
    Tree("kernel-4.19").host(mem_kb=8 * GIB_KB - 200000, release="4.19.0-27-amd64").table(
        max_=262144, buckets=65536, count=40000).nf(
        "nf_conntrack_udp_timeout_stream", 180).remove(
        f"{NF}/nf_conntrack_tcp_ignore_invalid_rst").stat(
        [{"entries": 40000, "searched": 99, "delete_list": 7, "drop": 2}] * 8,
        header=STAT_HEADER_OLD)


if __name__ == "__main__":
    build()
