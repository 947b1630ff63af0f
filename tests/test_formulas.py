"""The kernel sizing helpers, against the kernel's own arithmetic and this machine's kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from ct_tune import formulas as f

GIB = 1024**3


@pytest.mark.parametrize(
    ("mem", "ptr", "kernel", "buckets"),
    [
        (16 * GIB, 8, (6, 1), 262144),        # > 4 GiB on 64-bit
        (4 * GIB, 8, (6, 1), 65536),          # exactly 4 GiB is not "> 4 GiB"
        (2 * GIB, 8, (6, 1), 65536),          # > 1 GiB
        (512 * 1024**2, 8, (6, 1), 4096),     # RAM / 16384 / 8
        (64 * 1024**2, 8, (6, 1), 1024),      # floor 1024 (512 rounds to a page -> 1024)
        (16 * GIB, 4, (6, 1), 65536),         # 32-bit never gets 262144
        (16 * GIB, 8, (4, 19), 65536),        # pre-5.15 caps
        (2 * GIB, 8, (4, 19), 16384),
        (300 * 1024**2, 8, (4, 19), 2560),    # 2400 rounded up to a page of 512 heads
    ],
)
def test_kernel_default_buckets(mem, ptr, kernel, buckets):
    assert f.kernel_default_buckets(mem, ptr, kernel) == buckets


def test_default_max_factor_follows_kernel_and_hashsize():
    assert f.kernel_default_max(16 * GIB, 8, (6, 1)) == 262144
    assert f.kernel_default_max(16 * GIB, 8, (4, 19)) == 4 * 65536
    # hashsize= given: the old factor 8, whatever the kernel
    assert f.kernel_default_max(16 * GIB, 8, (6, 1), hashsize=16384) == 131072


def test_defaults_match_this_kernel():
    """The formula must reproduce what the running kernel chose (unless hashsize= was given)."""
    nf = Path("/proc/sys/net/netfilter")
    if not (nf / "nf_conntrack_buckets").exists():
        pytest.skip("nf_conntrack is not loaded on this machine")
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    mem = int(meminfo[1]) * 1024
    release = Path("/proc/sys/kernel/osrelease").read_text()
    from ct_tune.parsers import parse_kernel_version

    kernel = parse_kernel_version(release)
    buckets = int((nf / "nf_conntrack_buckets").read_text())
    expected = f.kernel_default_buckets(mem, 8, kernel)
    if buckets != expected:
        pytest.skip(f"buckets were changed on this host ({buckets}), not the kernel default")
    assert buckets == expected


@pytest.mark.parametrize(("n", "ptr", "out"), [(1, 8, 512), (512, 8, 512), (513, 8, 1024),
                                                (1000, 4, 1024), (1025, 4, 2048)])
def test_round_buckets_to_pages(n, ptr, out):
    assert f.round_buckets(n, ptr) == out


def test_table_memory_and_budget_are_inverse():
    per_entry, ptr = 256, 8
    budget = 64 * 1024**2
    m = f.max_for_budget(budget, per_entry, ptr, per_bucket=1)
    assert f.table_memory(m, m, per_entry, ptr) <= budget
    assert f.table_memory(m + 1, m + 1, per_entry, ptr) > budget


def test_extensions_cost_a_prealloc_block_only_when_enabled():
    assert f.extension_bytes() == 0
    assert f.extension_bytes(acct=True) == 128
    assert f.entry_bytes(256, f.extension_bytes(acct=True, timestamp=True)) == 384


def test_chain_length_counts_both_directions():
    assert f.chain_length(262144, 262144) == 2
    assert f.chain_length(1048576, 16384) == 128


def test_keepalive_window_linux_defaults():
    assert f.keepalive_window(7200, 75, 9) == 7875


@pytest.mark.parametrize(("cpus", "out"), [(1, 131072), (4, 131072), (8, 262144),
                                           (96, 1048576)])
def test_kube_proxy_max(cpus, out):
    assert f.kube_proxy_max(cpus) == out


def test_memory_base_uses_lowmem_on_32_bit():
    assert f.memory_base(4 * GIB, 870 * 1024**2, 4) == 870 * 1024**2
    assert f.memory_base(4 * GIB, None, 4) == f.LOWMEM_I386
    assert f.memory_base(4 * GIB, None, 8) == 4 * GIB


def test_human_formats():
    assert f.human_duration(432000) == "5 d"
    assert f.human_duration(7875) == "2 h 11 min"
    assert f.human_bytes(66 * 1024**2) == "66.0 MiB"
