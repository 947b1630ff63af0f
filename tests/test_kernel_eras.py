"""Kernel eras: the boot defaults, writability and naming of each kernel generation.

The numbers are the kernel's own arithmetic, each era as ct_tune/kernelmodel.py cites it:
nf_conntrack_init_init_net / nf_conntrack_init_start (RAM / 16384 / sizeof(struct
hlist_head); 16384 above 1 GiB; 65536 above 4 GiB from 3.19/4.0; max = 4 x buckets, 8 x
with hashsize=; since 5.15 (d532bcd0b269) 262144 above 4 GiB on 64-bit, 65536 above
1 GiB, at least 1024, max = buckets), nf_ct_alloc_hashtable (rounded up to a page of
heads; before 4.7 max is computed from the unrounded size), nf_conntrack_expect_init
(expect_max = 4 x max(1, buckets / 256)).
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, tree_args

from ct_tune import engine, facts, fragments, kernelmodel, plan, profiles, ruleset, snapshot

GIB = 1024**3
MIB = 1024**2
BUCKETS = "net.netfilter.nf_conntrack_buckets"


@pytest.mark.parametrize(
    ("kernel", "mem", "ptr", "buckets", "max_", "expect"),
    [
        # RHEL 6 x86_64, 8 GiB: > 1 GiB -> 16384, max 4 x, expect 4 x 64
        ((2, 6, 32), 8 * GIB, 8, 16384, 65536, 256),
        # RHEL 6 i686, 3 GiB: the same cap (16384 is a whole number of 1024-head pages)
        ((2, 6, 32), 3 * GIB, 4, 16384, 65536, 256),
        # RHEL 7 on 16 GiB: still 16384 (no 4 GiB cap before 3.19/4.0)
        ((3, 10, 0), 16 * GIB, 8, 16384, 65536, 256),
        ((3, 13, 0), 4 * GIB, 8, 16384, 65536, 256),
        # 4.4 on 8 GiB: the 4 GiB cap exists, factor 4
        ((4, 4, 0), 8 * GIB, 8, 65536, 262144, 1024),
        ((4, 19, 0), 8 * GIB, 8, 65536, 262144, 1024),
        ((5, 4, 0), 2 * GIB, 8, 16384, 65536, 256),
        ((5, 10, 0), 32 * GIB, 8, 65536, 262144, 1024),
        # before 5.15 the 4 GiB cap is not 64-bit only (a PAE kernel with 8 GiB)
        ((5, 10, 0), 8 * GIB, 4, 65536, 262144, 1024),
        # 5.15: 262144 above 4 GiB on 64-bit, 65536 on 32-bit, max = buckets
        ((5, 15, 0), 16 * GIB, 8, 262144, 262144, 4096),
        ((5, 15, 0), 8 * GIB, 4, 65536, 65536, 1024),
        ((6, 1, 0), 2 * GIB, 8, 65536, 65536, 1024),
        # 512 MiB 64-bit: RAM / 16384 / 8 = 4096 buckets in every era
        ((3, 10, 0), 512 * MIB, 8, 4096, 16384, 64),
        ((6, 1, 0), 512 * MIB, 8, 4096, 4096, 64),
        # 32 MiB: 256 rounds up to a page (512 heads); 5.15's floor is 1024
        ((4, 19, 0), 32 * MIB, 8, 512, 2048, 8),
        ((6, 1, 0), 32 * MIB, 8, 1024, 1024, 16),
    ],
)
def test_boot_defaults_per_era(kernel, mem, ptr, buckets, max_, expect):
    assert kernelmodel.boot_buckets(kernel, mem, ptr) == buckets
    assert kernelmodel.boot_max(kernel, mem, ptr) == max_
    assert kernelmodel.boot_expect_max(kernel, mem, ptr) == expect


def test_before_4_7_max_and_expect_come_from_the_unrounded_size():
    """1000 MiB, 64-bit: RAM / 16384 / 8 = 8000 heads, allocated as 8192.  Before 4.7 max
    (and from 3.x expect_max) were computed before the per-namespace allocation rounded
    it; from 4.7 the global table is allocated first (nf_conntrack_init_start)."""
    mem = 1000 * MIB
    assert kernelmodel.boot_buckets((4, 4, 0), mem, 8) == 8192
    assert kernelmodel.boot_max((4, 4, 0), mem, 8) == 4 * 8000
    assert kernelmodel.boot_expect_max((4, 4, 0), mem, 8) == 4 * (8000 // 256)
    assert kernelmodel.boot_max((4, 9, 0), mem, 8) == 4 * 8192
    assert kernelmodel.boot_expect_max((4, 9, 0), mem, 8) == 4 * (8192 // 256)
    # 2.6.32: nf_conntrack_expect_init ran per namespace, after the table was allocated
    assert kernelmodel.boot_max((2, 6, 32), mem, 8) == 4 * 8000
    assert kernelmodel.boot_expect_max((2, 6, 32), mem, 8) == 4 * (8192 // 256)


def test_hashsize_parameter_means_factor_8():
    assert kernelmodel.boot_buckets((3, 10, 0), 16 * GIB, 8, hashsize=100000) == 100352
    assert kernelmodel.boot_max((3, 10, 0), 16 * GIB, 8, hashsize=100000) == 800000
    assert kernelmodel.boot_max((4, 19, 0), 16 * GIB, 8, hashsize=100000) == 8 * 100352
    assert kernelmodel.boot_max((6, 1, 0), 16 * GIB, 8, hashsize=16384) == 131072
    assert kernelmodel.boot_expect_max((6, 1, 0), 16 * GIB, 8, expect_hashsize=100) == 400


def test_unpinned_eras_answer_unknown():
    # 3.19: the 4 GiB cap landed in 3.19 or 4.0; below 4 GiB both agree
    assert kernelmodel.boot_buckets((3, 19, 0), 8 * GIB, 8) is None
    assert kernelmodel.boot_max((3, 19, 0), 8 * GIB, 8) is None
    assert kernelmodel.boot_buckets((3, 19, 0), 2 * GIB, 8) == 16384
    # before 2.6.24 (list_head buckets, the ip_conntrack module): not modelled
    assert kernelmodel.boot_max((2, 6, 18), 4 * GIB, 8) is None
    assert kernelmodel.era(None) is None


def test_unknown_pointer_size_answers_when_both_sizes_agree():
    assert kernelmodel.boot_max((3, 13, 0), 4 * GIB, None) == 65536
    assert kernelmodel.boot_buckets((5, 15, 0), 2 * GIB, None) == 65536
    # above 4 GiB on 5.15 the 262144 cap is 64-bit only: 4 and 8 bytes disagree
    assert kernelmodel.boot_buckets((5, 15, 0), 16 * GIB, None) is None
    # small RAM depends on the pointer size in every era
    assert kernelmodel.boot_buckets((4, 19, 0), 512 * MIB, None) is None


def test_writability_by_era():
    assert kernelmodel.buckets_writable((4, 6, 0)) is False
    assert kernelmodel.buckets_writable((4, 7, 0)) is True
    assert kernelmodel.buckets_writable((3, 10, 0)) is False
    assert kernelmodel.buckets_writable(None) is None
    assert kernelmodel.netns_readonly((5, 15, 0)) == [
        "nf_conntrack_buckets", "nf_conntrack_expect_max", "nf_conntrack_max"]
    assert kernelmodel.netns_readonly((4, 19, 0)) == ["nf_conntrack_buckets"]
    assert kernelmodel.netns_readonly((5, 10, 0)) is None  # stable backport: the mode tells
    assert kernelmodel.readonly_reason("nf_conntrack_buckets", False, (3, 10, 0), True) == "kernel"
    assert kernelmodel.readonly_reason("nf_conntrack_buckets", False, (5, 15, 0), False) == "netns"
    assert kernelmodel.readonly_reason("nf_conntrack_count", False, (5, 15, 0), False) is None
    assert kernelmodel.readonly_reason("nf_conntrack_max", False, (5, 15, 0), True,
                                       mount_ro=True) == "read-only-mount"


@pytest.mark.parametrize(("release", "arch"), [
    ("3.10.0-1160.119.1.el7.x86_64", "x86_64"),
    ("2.6.32-754.el6.i686", "i686"),
    ("4.19.0-27-amd64", "x86_64"),
    ("5.10.0-28-686-pae", "i686"),
    ("6.1.0-18-arm64", "aarch64"),
    ("5.14.0-427.el9.aarch64", "aarch64"),
    ("3.13.0-170-generic", None),
    ("2.6.18-419.el5", None),
    (None, None),
])
def test_arch_from_release(release, arch):
    assert kernelmodel.arch_from_release(release) == arch


def test_describe_cites_every_answer():
    d = kernelmodel.describe((3, 10, 0), "3.10.0-1160.el7.x86_64", 16 * GIB, 8)
    assert (d["buckets"], d["max"], d["expect_max"], d["factor"]) == (16384, 65536, 256, 4)
    assert d["buckets_writable"] is False and d["distribution"] == "rhel7"
    assert any("3183ab8997a4" in s for s in d["sources"])
    assert any("RHEL" in s for s in d["sources"])
    assert kernelmodel.describe((5, 15, 0), None, 16 * GIB, 8)["max"] == 262144


def test_facts_without_kernel_arch_use_the_release_suffix(tree):
    data = facts.collect(tree("kernel-3.10-el7"))
    host = data["host"]
    assert (host["arch"], host["pointer_size"], host["distribution"]) == ("x86_64", 8, "rhel7")
    assert host["arch_source"].endswith("osrelease suffix (3.10.0-1160.119.1.el7.x86_64)")
    assert data["sysctl"][BUCKETS] == {"value": 16384, "writable": False, "readonly": "kernel"}
    assert data["conntrack"]["initial_netns"] is True
    # the new fields survive a snapshot round trip
    assert snapshot.validate(json.loads(snapshot.dumps(data)), "x")["host"]["arch"] == "x86_64"


def test_unknown_arch_is_recorded_as_unknown(tree):
    host = facts.collect(tree("kernel-3.13-ubuntu"))["host"]
    assert (host["arch"], host["pointer_size"], host["arch_source"]) == (None, None, None)


def test_the_live_host_has_an_arch_and_says_where_from():
    host = facts.collect(facts.Roots())["host"]
    assert host["arch"] and host["pointer_size"] in (4, 8)
    assert host["arch_source"] in ("/proc/sys/kernel/arch", "uname(2) machine")


def test_old_ip_conntrack_names_are_read_under_the_modern_names(tree):
    data = facts.collect(tree("kernel-2.6.18-ip-conntrack"))
    entry = data["sysctl"]["net.netfilter.nf_conntrack_max"]
    assert entry["value"] == 65536 and entry["key"] == "net.ipv4.netfilter.ip_conntrack_max"
    assert data["conntrack"]["loaded"] is True
    assert data["conntrack"]["initial_netns"] is True
    # where nf_conntrack has them too (the compatibility names), they are the same variable
    assert "key" not in facts.collect(tree("kernel-2.6.32-el6"))["sysctl"][
        "net.netfilter.nf_conntrack_max"]


def test_container_on_a_pre_5_13_kernel_is_not_the_initial_namespace(tree):
    data = facts.collect(tree("kernel-4.19-netns"))
    assert data["sysctl"]["net.netfilter.nf_conntrack_max"]["writable"] is True
    assert data["conntrack"]["initial_netns"] is False
    assert data["sysctl"][BUCKETS]["readonly"] == "netns"


def _plan(roots: facts.Roots) -> tuple[plan.Plan, dict]:
    data = facts.collect(roots)
    prof = profiles.get(profiles.load(), "default")
    return plan.build(engine.evaluate(ruleset.load(), data, prof), data, prof), data


def test_buckets_before_4_7_are_planned_as_the_hashsize_option(tree):
    p, _ = _plan(tree("kernel-3.10-el7"))
    assert BUCKETS not in [s.key for s in p.settings]
    assert p.hashsize == 65536
    skip = next(s for s in p.skips if s.key == BUCKETS)
    assert "echo 65536 > /sys/module/nf_conntrack/parameters/hashsize" in skip.reason
    files = fragments.render(p, fragments.Meta("t", "default", "2026-01-01"))
    assert "options nf_conntrack hashsize=65536" in files[fragments.MODPROBE]
    assert BUCKETS not in files["etc/sysctl.d/99-ct-tune.conf"]


def test_apply_on_3_10_writes_the_modprobe_option_and_no_buckets_sysctl(tree, tmp_path):
    roots = tree("kernel-3.10-el7")
    root = tmp_path / "root"
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    assert proc.returncode == 0, proc.stderr
    assert "options nf_conntrack hashsize=65536" in (
        root / "etc/modprobe.d/ct-tune.conf").read_text()
    assert BUCKETS not in (root / "etc/sysctl.d/99-ct-tune.conf").read_text()
    assert "set it on the host" not in proc.stdout
    # the read-only key was not written
    assert (roots.procfs / "sys/net/netfilter/nf_conntrack_buckets").read_text() == "16384\n"


def test_apply_on_the_ip_conntrack_module_writes_the_names_the_host_has(tree, tmp_path):
    roots = tree("kernel-2.6.18-ip-conntrack")
    root = tmp_path / "root"
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    assert proc.returncode == 0, proc.stderr
    conf = (root / "etc/sysctl.d/99-ct-tune.conf").read_text()
    assert "\nnet.ipv4.netfilter.ip_conntrack_tcp_timeout_established = 86400\n" in conf
    assert "net.netfilter." not in conf.replace("# net.netfilter.", "")
    old = roots.procfs / "sys/net/ipv4/netfilter/ip_conntrack_tcp_timeout_established"
    assert old.read_text().strip() == "86400"
    assert not (root / "etc/modprobe.d/ct-tune.conf").exists()
    back = run_cli("rollback", "--procfs", str(roots.procfs), "--root", str(root))
    assert back.returncode == 0, back.stderr
    assert old.read_text().strip() == "432000"


def _replayed(src: facts.Roots, out) -> dict:
    proc = run_cli("capture", *tree_args(src), str(out))
    assert proc.returncode == 0, proc.stderr
    return facts.collect(facts.Roots(out / "proc", out / "sys"))


def test_capture_keeps_the_old_names_and_the_machine(tree, tmp_path):
    """A capture replays what the audit read: the ip_conntrack_* names, and on a kernel
    without kernel/arch the uname(2) machine (here: the one a previous capture kept)."""
    src = tree("kernel-2.6.18-ip-conntrack")
    (src.procfs.parent / facts.MACHINE_FILE).write_text("i686\n")
    before = facts.collect(src)
    assert (before["host"]["arch"], before["host"]["pointer_size"]) == ("i686", 4)
    after = _replayed(src, tmp_path / "captured")
    assert after["sysctl"] == before["sysctl"]
    assert (after["host"]["arch"], after["host"]["pointer_size"]) == ("i686", 4)
    assert after["conntrack"]["loaded"] is True


def test_a_corrupt_captured_machine_is_bad_input(tree):
    src = tree("kernel-3.13-ubuntu")
    (src.procfs.parent / facts.MACHINE_FILE).write_text("x86_64; rm -rf /\n")
    proc = run_cli("audit", *tree_args(src))
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"ct-tune: {src.procfs.parent / facts.MACHINE_FILE}: not a")
