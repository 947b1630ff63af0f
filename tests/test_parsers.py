"""Parsers of the procfs formats, including old kernels' layouts and corrupt input."""

from __future__ import annotations

import pytest

from ct_tune import parsers as p

NEW = ("entries  clashres found new invalid ignore delete chainlength insert insert_failed "
       "drop early_drop icmp_error  expect_new expect_create expect_delete search_restart")


def _line(values: dict[str, int], header: str = NEW) -> str:
    return " ".join(f"{values.get(n, 0):08x}" for n in header.split())


def test_stat_sums_cpus_by_name_and_does_not_sum_entries():
    text = "\n".join([NEW, _line({"entries": 500, "drop": 0x10, "chainlength": 1}),
                      _line({"entries": 500, "drop": 0x20, "clashres": 3})])
    out = p.parse_conntrack_stat(text)
    assert out["entries"] == 500
    assert out["cpus"] == 2
    assert out["counters"]["drop"] == 0x30
    # the procfs names are mapped to conntrack -S names
    assert out["counters"]["chaintoolong"] == 1
    assert out["counters"]["clash_resolve"] == 3
    assert "entries" not in out["counters"]


def test_stat_old_header_is_read_by_name():
    old = NEW.replace("clashres", "searched").replace("chainlength", "delete_list")
    # columns in a different order must not matter
    cols = old.split()
    cols[1], cols[10] = cols[10], cols[1]
    header = " ".join(cols)
    out = p.parse_conntrack_stat(header + "\n" + _line({"drop": 5, "searched": 9}, header))
    assert out["counters"]["drop"] == 5
    assert out["counters"]["searched"] == 9
    assert "chaintoolong" not in out["counters"]


@pytest.mark.parametrize("text", ["", NEW + "\n0000 zz", NEW + "\n00000001 00000002",
                                  "1 2 3\n00000001 00000002 00000003",
                                  # a header alone, or one without the counters ct-tune reads
                                  "garbage\n", NEW + "\n", "a b\n0 0\n",
                                  # hex that is not a counter: 0x prefix, _, 17 digits
                                  "entries drop\n0x1 2", "entries drop\n1_0 2",
                                  "entries drop\n1 " + "f" * 17])
def test_stat_corrupt_input_is_a_value_error(text):
    with pytest.raises(ValueError):
        p.parse_conntrack_stat(text)


def test_meminfo_in_bytes_and_lowtotal():
    out = p.parse_meminfo("MemTotal: 1000 kB\nLowTotal:  500 kB\nHugePages_Total: 0\n")
    assert out == {"MemTotal": 1024000, "LowTotal": 512000, "HugePages_Total": 0}
    with pytest.raises(ValueError, match="line 1"):
        p.parse_meminfo("MemTotal lots\n")


def test_cpu_list():
    assert p.parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    with pytest.raises(ValueError):
        p.parse_cpu_list("0-a")


@pytest.mark.parametrize(("release", "out"), [("6.18.44-fc-v657", (6, 18, 44)),
                                              ("3.10.0-1160.el7.x86_64", (3, 10, 0)),
                                              ("5.15", (5, 15, 0)), ("weird", None)])
def test_kernel_version(release, out):
    assert p.parse_kernel_version(release) == out


@pytest.mark.parametrize(("arch", "size"), [("x86_64", 8), ("aarch64", 8), ("i686", 4),
                                            ("armv7l", 4), ("s390x", 8), ("vax", None)])
def test_pointer_size(arch, size):
    assert p.pointer_size_for_arch(arch) == size


def test_sysctl_values_keep_multi_field_and_text():
    assert p.parse_sysctl_value("4096\n") == 4096
    assert p.parse_sysctl_value("4096\t16384 4194304\n") == [4096, 16384, 4194304]
    assert p.parse_sysctl_value("NONE\n") == "NONE"


def test_slabinfo_object_size():
    text = ("slabinfo - version: 2.1\n# name ...\n"
            "nf_conntrack_expect 0 0 208 19 1 : tunables 0 0 0 : slabdata 0 0 0\n"
            "nf_conntrack 10 16 256 16 1 : tunables 0 0 0 : slabdata 1 1 0\n")
    assert p.parse_slabinfo(text) == 256
    assert p.parse_slabinfo("slabinfo - version: 2.1\n") is None


def test_uptime_whole_seconds_and_corrupt_input():
    assert p.parse_uptime("350735.97 234388.90\n") == 350735
    for bad in ("", "x 1.0", "-5.0 1.0", "nan 1.0", "inf 2"):
        with pytest.raises(ValueError, match="seconds since boot"):
            p.parse_uptime(bad)


@pytest.mark.parametrize("text", ["-", "1_000", "\u00b2", "\u0663", "9" * 21, "9" * 5000,
                                  "", " ", "0x10", "1e3"])
def test_parse_int_refuses_what_is_not_a_sane_decimal(text):
    with pytest.raises(ValueError, match=r"expected an integer|empty|number too long"):
        p.parse_int(text)


def test_parse_int_reads_signed_decimals():
    assert p.parse_int(" -5\n") == -5
    assert p.parse_int("9" * 20) == int("9" * 20)


@pytest.mark.parametrize("text", ["0-99999999", "0-65536", "4294967295"])
def test_cpu_list_beyond_any_kernel_is_refused_without_building_it(text):
    with pytest.raises(ValueError):
        p.parse_cpu_list(text)


def test_meminfo_refuses_huge_and_non_ascii_numbers():
    for value in ("9" * 5000, "\u00b2", "-5"):
        with pytest.raises(ValueError, match=r"line 1|number too long"):
            p.parse_meminfo(f"MemTotal: {value} kB\n")


def test_sysctl_value_with_huge_digits_is_kept_as_text():
    assert p.parse_sysctl_value("9" * 5000) == "9" * 5000
    assert p.parse_sysctl_value("4096 87380 6291456") == [4096, 87380, 6291456]
