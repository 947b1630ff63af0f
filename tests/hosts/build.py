"""Regenerate the captured host trees used by the tests.

`_live/` is `ct-tune capture` of a real 6.18 x86_64 VM (24 GiB, 2 CPUs).  The trees of
build_writers() add the evidence ct_tune.writers reads: /proc/PID/cmdline of kube-proxy or
k3s, its config file under /proc/PID/root, containerd's record of its image, /proc/1/comm,
/run/systemd/system, /.dockerenv, /etc/openwrt_release and /etc/modules.d.  Each
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

    def process(self, pid: int, argv: list[str], cgroup: str | None = None,
                comm: str | None = None) -> Tree:
        """/proc/PID/cmdline (NUL-separated, as the kernel shows it) and /proc/PID/cgroup."""
        self.set(f"proc/{pid}/cmdline", "\0".join(argv) + "\0", mode=0o444)
        if comm is not None:
            self.set(f"proc/{pid}/comm", f"{comm}\n", mode=0o644)
        if cgroup is not None:
            self.set(f"proc/{pid}/cgroup", cgroup, mode=0o444)
        return self

    def marker(self, rel: str) -> Tree:
        """A directory whose existence is the evidence (/run/systemd/system), kept in git by
        the same .present file ct-tune capture writes."""
        return self.set(f"{rel}/.present", "")

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

    build_writers()


#: A containerd container id (64 hex digits) for kube-proxy's pod.
KP_CID = "4f2b9c1d" * 8
KP_CGROUP = ("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b.slice/"
             f"cri-containerd-{KP_CID}.scope\n")
KP_CONFIG = """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
conntrack:
  maxPerCore: null
  min: null
  tcpCloseWaitTimeout: 1h0m0s
  tcpEstablishedTimeout: 2h0m0s
mode: iptables
"""


def kube_node(name: str) -> Tree:
    """A 16-CPU, 16 GiB systemd node (kernel default max 262144) whose admin raised max to
    1 Mi at run time; kube-proxy's established timeout is 2 h, close_wait 1 h."""
    return Tree(name).host(mem_kb=16337060, cpus="0-15").table(
        max_=1048576, buckets=262144, count=20000).nf(
        "nf_conntrack_tcp_timeout_established", 7200).nf(
        "nf_conntrack_tcp_timeout_close_wait", 3600).process(
        1, ["/sbin/init"], comm="systemd").marker("run/systemd/system")


def build_writers() -> None:
    """Hosts where something else writes the keys, or boot is not systemd's."""
    # kube-proxy 1.25 (only raises: PR #103174), kubeadm-style: --config file read through
    # /proc/PID/root, version from the image name containerd recorded for its container.
    kube_node("kube-proxy-1.25-config").process(
        4242, ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
               "--hostname-override=node-1"], cgroup=KP_CGROUP).set(
        "proc/4242/root/var/lib/kube-proxy/config.conf", KP_CONFIG).set(
        f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{KP_CID}/config.json",
        '{"annotations": {"io.kubernetes.cri.image-name": '
        '"registry.k8s.io/kube-proxy:v1.25.16"}}\n').marker("run/containerd")

    # kube-proxy 1.30 (rewrites whenever the value differs: PR #120448), flags only, run by
    # systemd from a versioned install path.
    kube_node("kube-proxy-1.30-flags").process(
        4242, ["/opt/kubernetes/v1.30.2/bin/kube-proxy", "--kubeconfig=/etc/kube-proxy.conf",
               "--conntrack-max-per-core=32768", "--conntrack-tcp-timeout-established=2h0m0s",
               "--proxy-mode=iptables"],
        cgroup="0::/system.slice/kube-proxy.service\n")

    # k3s inside Docker (k3d): a non-initial network namespace (max, buckets, expect_max
    # 0444, no net.nf_conntrack_max), /.dockerenv, k3s as PID 1 with its title rewritten,
    # and k3s's kube-proxy told to leave max alone (conntrack-max-per-core=0).
    t = Tree("k3s-in-docker").host(mem_kb=16337060, cpus="0-7").table(
        max_=262144, buckets=262144, count=3000).nf(
        "nf_conntrack_tcp_timeout_established", 86400).nf(
        "nf_conntrack_tcp_timeout_close_wait", 3600)
    for key in ("nf_conntrack_max", "nf_conntrack_buckets", "nf_conntrack_expect_max"):
        t.set(f"{NF}/{key}", (t.root / NF / key).read_text(), mode=0o444)
    t.remove("proc/sys/net/nf_conntrack_max").remove("proc/slabinfo")
    t.set(".dockerenv", "").process(1, ["/bin/k3s server"], comm="k3s-server",
                                    cgroup="0::/\n").set(
        "proc/1/root/etc/rancher/k3s/config.yaml",
        'kube-proxy-arg:\n  - "conntrack-max-per-core=0"\n')

    # OpenWrt 23.05 router (procd, no systemd): kmod-nf-conntrack's /etc/modules.d entry
    # and its /etc/sysctl.d/11-nf-conntrack.conf (package/kernel/linux/files), applied.
    t = openwrt("openwrt")
    t.set("etc/modules.d/nf-conntrack", "nf_conntrack\n")
    # The same router where nothing in /etc/modules.d loads nf_conntrack.
    openwrt("openwrt-no-modules-d")


OPENWRT_SYSCTL = """# Do not edit, changes to this file will be lost on upgrades
# /etc/sysctl.conf can be used to customize sysctl settings

net.netfilter.nf_conntrack_acct=1
net.netfilter.nf_conntrack_checksum=0
net.netfilter.nf_conntrack_tcp_max_retrans=5
net.netfilter.nf_conntrack_tcp_timeout_established=7440
net.netfilter.nf_conntrack_udp_timeout=60
net.netfilter.nf_conntrack_udp_timeout_stream=180
"""


def openwrt(name: str) -> Tree:
    t = Tree(name).host(mem_kb=509000, cpus="0-3", arch="aarch64",
                        release="5.15.150").table(max_=4096, buckets=4096, count=300).nf(
        "nf_conntrack_expect_max", 64)
    for key, value in (("acct", 1), ("checksum", 0), ("tcp_max_retrans", 5),
                       ("tcp_timeout_established", 7440), ("udp_timeout", 60),
                       ("udp_timeout_stream", 180)):
        t.nf(f"nf_conntrack_{key}", value)
    t.process(1, ["/sbin/procd"], comm="procd")
    t.set("etc/openwrt_release", "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='23.05.3'\n"
          "DISTRIB_TARGET='mediatek/filogic'\n")
    return t.set("etc/sysctl.d/11-nf-conntrack.conf", OPENWRT_SYSCTL)


if __name__ == "__main__":
    build()
