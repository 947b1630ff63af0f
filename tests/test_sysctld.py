"""sysctl.d parsing and systemd's precedence: what boot will set, read from files under a root."""

from __future__ import annotations

from pathlib import Path

import pytest

from ct_tune import facts, sysctld

MAX = "net.netfilter.nf_conntrack_max"
EST = "net.netfilter.nf_conntrack_tcp_timeout_established"


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def link(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def boot(root: Path) -> dict:
    """The persist facts for a scratch root, as audit reads them."""
    return facts._persistence(root)


def winners(root: Path) -> dict[str, tuple[str, str]]:
    return {k: (v["value"], v["file"]) for k, v in boot(root)["sysctl"].items()}


# --- parsing one file ---------------------------------------------------------------------

def test_comments_blank_lines_and_lines_without_equals_are_ignored():
    text = ("# a comment\n; another\n\n   # indented comment\nnot an assignment\n"
            f"{MAX} = 524288\n")
    got = sysctld.parse_sysctl(text, "/etc/sysctl.d/x.conf")
    assert [(a.key, a.value, a.line) for a in got] == [(MAX, "524288", 6)]


def test_whitespace_around_key_and_value_is_stripped_and_inline_hash_is_kept():
    # systemd and procps have no inline comments: the value is the rest of the line
    got = sysctld.parse_sysctl(f"  {MAX}=  524288  \nkernel.x = a # b\n", "f")
    assert [(a.key, a.value) for a in got] == [(MAX, "524288"), ("kernel.x", "a # b")]


def test_leading_dash_marks_an_optional_key():
    (a,) = sysctld.parse_sysctl(f"-{MAX} = 1\n", "f")
    assert (a.key, a.optional) == (MAX, True)
    (b,) = sysctld.parse_sysctl(f"{MAX} = 1\n", "f")
    assert b.optional is False


@pytest.mark.parametrize(("raw", "key"), [
    ("net/netfilter/nf_conntrack_max", MAX),
    ("-net/netfilter/nf_conntrack_max", "-" + MAX),
    # the first separator decides: slash form swaps dots and slashes (systemd sysctl.d(5))
    ("net/ipv4/conf/eth0.100/rp_filter", "net.ipv4.conf.eth0/100.rp_filter"),
    ("net.ipv4.conf.eth0/100.rp_filter", "net.ipv4.conf.eth0/100.rp_filter"),
    (MAX, MAX),
])
def test_slash_separated_keys_mean_the_same_key(raw: str, key: str):
    assert sysctld.normalize_key(raw) == key


def test_slash_key_in_a_file_is_the_dotted_key():
    (a,) = sysctld.parse_sysctl("-net/netfilter/nf_conntrack_max = 1\n", "f")
    assert (a.key, a.optional) == (MAX, True)


def test_modules_load_and_modprobe_options():
    assert sysctld.parse_modules_load("# c\n; c\nnf_conntrack  # why\n\nloop\n") == [
        "nf_conntrack", "loop"]
    text = ("options nf_conntrack hashsize=65536 expect_hashsize=512\n"
            "# options nf_conntrack hashsize=1\noptions nf-conntrack acct=1\n"
            "options other hashsize=9\n")
    assert sysctld.parse_modprobe_options(text, "nf_conntrack") == {
        "hashsize": "65536", "expect_hashsize": "512", "acct": "1"}


def test_modules_that_need_nf_conntrack_load_it():
    assert all(sysctld.loads_conntrack(m) for m in
               ("nf_conntrack", "nf_conntrack_ftp", "nf_nat", "xt_conntrack", "nft_ct"))
    assert not any(sysctld.loads_conntrack(m) for m in ("br_netfilter", "overlay", "loop"))


def test_udev_rule_detection_ignores_comments():
    rule = ('ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", '
            'RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"\n')
    assert sysctld.udev_reloads_sysctl(rule)
    assert not sysctld.udev_reloads_sysctl("# " + rule)
    assert not sysctld.udev_reloads_sysctl('KERNEL=="nf_conntrack", RUN+="/bin/true"\n')


# --- precedence -------------------------------------------------------------------------------

def test_ordered_sorts_by_name_across_directories_and_masks_same_names():
    got = sysctld.ordered({
        "etc/sysctl.d": ["50-ct.conf", "90-z.conf", "README"],
        "run/sysctl.d": ["10-run.conf"],
        "usr/lib/sysctl.d": ["50-ct.conf", "60-vendor.conf"],
    })
    assert got == ["run/sysctl.d/10-run.conf", "etc/sysctl.d/50-ct.conf",
                   "usr/lib/sysctl.d/60-vendor.conf", "etc/sysctl.d/90-z.conf"]


def test_effective_is_the_last_assignment():
    a = sysctld.parse_sysctl(f"{MAX} = 1\n{MAX} = 2\n", "f")
    assert sysctld.effective(a)[MAX].value == "2"


def test_vendor_file_read_later_wins_over_etc(tmp_path: Path):
    write(tmp_path, "etc/sysctl.d/40-admin.conf", f"{EST} = 86400\n")
    write(tmp_path, "usr/lib/sysctl.d/60-vendor.conf", f"{EST} = 432000\n")
    assert winners(tmp_path) == {EST: ("432000", "/usr/lib/sysctl.d/60-vendor.conf")}


def test_same_name_in_etc_masks_the_vendor_file(tmp_path: Path):
    write(tmp_path, "usr/lib/sysctl.d/50-ct.conf", f"{MAX} = 131072\n{EST} = 600\n")
    write(tmp_path, "etc/sysctl.d/50-ct.conf", f"{MAX} = 262144\n")
    got = boot(tmp_path)
    assert got["files"] == ["/etc/sysctl.d/50-ct.conf"]
    assert winners(tmp_path) == {MAX: ("262144", "/etc/sysctl.d/50-ct.conf")}


def test_dev_null_link_masks_the_vendor_file(tmp_path: Path):
    write(tmp_path, "usr/lib/sysctl.d/50-ct.conf", f"{MAX} = 131072\n")
    link(tmp_path, "etc/sysctl.d/50-ct.conf", "/dev/null")
    got = boot(tmp_path)
    assert got["files"] == [] and got["assignments"] == []


def test_sysctl_conf_is_read_last_without_the_link(tmp_path: Path):
    write(tmp_path, "etc/sysctl.conf", f"{MAX} = 65536\n")
    write(tmp_path, "etc/sysctl.d/99z-late.conf", f"{MAX} = 1048576\n")
    got = boot(tmp_path)
    assert got["files"] == ["/etc/sysctl.d/99z-late.conf", "/etc/sysctl.conf"]
    assert winners(tmp_path) == {MAX: ("65536", "/etc/sysctl.conf")}


@pytest.mark.parametrize("target", ["../sysctl.conf", "/etc/sysctl.conf"])
def test_99_sysctl_conf_link_reads_sysctl_conf_where_it_sorts_once(tmp_path: Path, target: str):
    write(tmp_path, "etc/sysctl.conf", f"{MAX} = 65536\n")
    write(tmp_path, "etc/sysctl.d/90-ct.conf", f"{MAX} = 1048576\n")
    write(tmp_path, "etc/sysctl.d/99z-late.conf", f"{EST} = 86400\n")
    link(tmp_path, "etc/sysctl.d/99-sysctl.conf", target)
    got = boot(tmp_path)
    assert got["files"] == ["/etc/sysctl.d/90-ct.conf", "/etc/sysctl.d/99-sysctl.conf",
                            "/etc/sysctl.d/99z-late.conf"]
    assert got["links"] == {"/etc/sysctl.d/99-sysctl.conf": "/etc/sysctl.conf"}
    assert [(a["key"], a["value"]) for a in got["assignments"]] == [
        (MAX, "1048576"), (MAX, "65536"), (EST, "86400")]
    assert winners(tmp_path)[MAX] == ("65536", "/etc/sysctl.d/99-sysctl.conf")


def test_only_conntrack_and_keepalive_keys_are_kept(tmp_path: Path):
    write(tmp_path, "etc/sysctl.d/10-x.conf",
          "kernel.pid_max = 4194304\nnet.ipv4.tcp_keepalive_time = 600\n"
          "net.nf_conntrack_max = 1\nnet.netfilter.nf_log_all_netns = 1\n")
    assert sorted(winners(tmp_path)) == ["net.ipv4.tcp_keepalive_time", "net.nf_conntrack_max"]


def test_early_load_sources(tmp_path: Path):
    write(tmp_path, "etc/modules", "loop\nnf_conntrack\n")
    link(tmp_path, "etc/modules-load.d/modules.conf", "../modules")  # Debian's link
    write(tmp_path, "usr/lib/modules-load.d/nat.conf", "nf_nat\n")
    write(tmp_path, "usr/lib/modules-load.d/other.conf", "br_netfilter\n")
    write(tmp_path, "etc/udev/rules.d/50-ct.rules",
          'KERNEL=="nf_conntrack", RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net"\n')
    # a same-named rule in /etc masks the vendor's
    write(tmp_path, "usr/lib/udev/rules.d/50-ct.rules", "# vendor\n")
    write(tmp_path, "usr/lib/udev/rules.d/60-ct.rules",
          'KERNEL=="nf_conntrack", RUN+="/usr/lib/systemd/systemd-sysctl"\n')
    write(tmp_path, "etc/modprobe.d/ct.conf", "options nf_conntrack hashsize=65536\n")
    got = boot(tmp_path)
    # /etc/modules is listed once, through the link modules-load.d reads
    assert got["early_load"] == [
        {"module": "nf_conntrack", "file": "/etc/modules-load.d/modules.conf"},
        {"module": "nf_nat", "file": "/usr/lib/modules-load.d/nat.conf"}]
    assert got["udev_sysctl_rules"] == ["/etc/udev/rules.d/50-ct.rules",
                                        "/usr/lib/udev/rules.d/60-ct.rules"]
    assert got["modprobe"] == {"hashsize": {"value": "65536", "file": "/etc/modprobe.d/ct.conf"}}


def test_in_root_resolves_absolute_links_inside_the_root(tmp_path: Path):
    write(tmp_path, "etc/sysctl.conf", "x")
    link(tmp_path, "etc/sysctl.d/99-sysctl.conf", "/etc/sysctl.conf")
    link(tmp_path, "lib", "usr/lib")
    assert facts.in_root(tmp_path, "etc/sysctl.d/99-sysctl.conf") == tmp_path / "etc/sysctl.conf"
    assert facts.in_root(tmp_path, "lib/sysctl.d/x.conf") == tmp_path / "usr/lib/sysctl.d/x.conf"
    link(tmp_path, "etc/up", "../../../..")  # '..' stops at the root
    assert facts.in_root(tmp_path, "etc/up/etc/sysctl.conf") == tmp_path / "etc/sysctl.conf"


def test_a_link_to_a_double_slash_path_stays_inside_the_root(tmp_path: Path):
    # POSIX leaves a leading '//' implementation-defined and pathlib keeps it as a root of
    # its own: resolved with Path, this link read the machine's own /etc/sysctl.conf
    write(tmp_path, "etc/sysctl.conf", f"{MAX} = 524288\n")
    link(tmp_path, "etc/sysctl.d/99-sysctl.conf", "//etc/sysctl.conf")
    assert facts.in_root(tmp_path, "etc/sysctl.d/99-sysctl.conf") == tmp_path / "etc/sysctl.conf"
    assert winners(tmp_path) == {MAX: ("524288", "/etc/sysctl.d/99-sysctl.conf")}
