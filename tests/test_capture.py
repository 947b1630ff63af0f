"""ct-tune capture copies the boot configuration too, so a captured host audits the same."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import run_cli, tree_args

from ct_tune import facts

MAX = "net.netfilter.nf_conntrack_max"


def put(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def ln(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def boot_config(top: Path) -> None:
    """A Debian-like /etc and /usr/lib under a captured host's top directory."""
    put(top, "etc/sysctl.conf", f"{MAX} = 65536\n")
    ln(top, "etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")
    put(top, "etc/sysctl.d/90-ct.conf", f"{MAX} = 1048576\n")
    put(top, "usr/lib/sysctl.d/30-vendor.conf",
        "net.netfilter.nf_conntrack_tcp_timeout_established = 86400\n")
    ln(top, "etc/sysctl.d/40-abs.conf", "/usr/lib/sysctl.d/30-vendor.conf")  # absolute
    put(top, "usr/lib/sysctl.d/50-masked.conf", f"{MAX} = 1\n")
    ln(top, "etc/sysctl.d/50-masked.conf", "/dev/null")
    put(top, "opt/ct/70.conf", "net.netfilter.nf_conntrack_udp_timeout = 60\n")
    ln(top, "etc/sysctl.d/70-ext.conf", "../../opt/ct/70.conf")  # not a config file itself
    ln(top, "lib", "usr/lib")  # merged /usr: lib/sysctl.d is usr/lib/sysctl.d
    put(top, "etc/modules", "nf_conntrack\n")
    ln(top, "etc/modules-load.d/modules.conf", "../modules")
    put(top, "etc/modprobe.d/ct.conf", "options nf_conntrack hashsize=65536\n")
    put(top, "etc/udev/rules.d/50-ct.rules",
        'KERNEL=="nf_conntrack", RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net"\n')
    put(top, "etc/udev/rules.d/60-disk.rules", 'KERNEL=="sda", OPTIONS+="x"\n')


def test_capture_copies_the_boot_configuration_keeping_links(tree, tmp_path: Path):
    src = tree("defaults-16g")
    top = src.procfs.parent
    boot_config(top)
    out = tmp_path / "captured"
    proc = run_cli("capture", *tree_args(src), str(out))
    assert proc.returncode == 0, proc.stderr

    etc = out / "etc"
    # links that decide the reading order stay links, relative so the tree can move
    assert os.readlink(etc / "sysctl.d/99-sysctl.conf") == "../sysctl.conf"
    assert os.readlink(etc / "modules-load.d/modules.conf") == "../modules"
    abs_link = etc / "sysctl.d/40-abs.conf"
    assert not os.path.isabs(os.readlink(abs_link))
    assert abs_link.resolve() == (out / "usr/lib/sysctl.d/30-vendor.conf").resolve()
    assert os.readlink(etc / "sysctl.d/50-masked.conf") == "/dev/null"
    # a link to a file outside the configuration directories brings that file along
    assert os.readlink(etc / "sysctl.d/70-ext.conf") == "../../opt/ct/70.conf"
    assert "udp_timeout = 60" in (out / "opt/ct/70.conf").read_text()
    assert (out / "usr/lib/sysctl.d/50-masked.conf").read_text() == f"{MAX} = 1\n"
    assert (etc / "modprobe.d/ct.conf").exists()
    # udev rules only when they mention nf_conntrack; lib/ is usr/lib/, copied once
    assert (etc / "udev/rules.d/50-ct.rules").exists()
    assert not (etc / "udev/rules.d/60-disk.rules").exists()
    assert not (out / "lib").exists()

    # the capture audits like the original: same boot configuration facts
    before = facts.collect(src)["persist"]
    after = facts.collect(facts.Roots(out / "proc", out / "sys"))["persist"]
    assert after["root"] == str(out)
    assert {**after, "root": None} == {**before, "root": None}
    assert [a["value"] for a in after["assignments"] if a["key"] == MAX] == ["1048576", "65536"]
    assert after["early_load"] == [{"module": "nf_conntrack",
                                    "file": "/etc/modules-load.d/modules.conf"}]

    audit = run_cli("audit", "--format", "json", "--no-sample", *tree_args(
        facts.Roots(out / "proc", out / "sys")))
    found = {f["rule"]: f for f in json.loads(audit.stdout)["findings"]}
    assert found["sysctl-override"]["evidence"]["over"][0]["wins"]["file"] == "/etc/sysctl.conf"


def test_capture_of_a_host_without_boot_configuration_still_works(tree, tmp_path: Path):
    src = tree("defaults-16g")
    out = tmp_path / "captured"
    proc = run_cli("capture", *tree_args(src), str(out))
    assert proc.returncode == 0, proc.stderr
    assert not (out / "etc").exists()
    p = facts.collect(facts.Roots(out / "proc", out / "sys"))["persist"]
    assert p["assignments"] == [] and p["files"] == []


def test_capture_keeps_initstate_so_a_loadable_module_is_recognised(tree, tmp_path: Path):
    src = tree("defaults-16g")
    put(src.sysfs, "module/nf_conntrack/initstate", "live\n")
    out = tmp_path / "captured"
    assert run_cli("capture", *tree_args(src), str(out)).returncode == 0
    assert (out / "sys/module/nf_conntrack/initstate").read_text() == "live\n"
    assert facts.collect(facts.Roots(out / "proc", out / "sys"))["conntrack"]["builtin"] is False


def test_the_fragment_printed_in_a_namespace_says_boot_will_not_apply_it_there(tree):
    """audit --format sysctl inside a namespace: the fragment is for a host's sysctl.d,
    which boot applies to the initial namespace only."""
    proc = run_cli("audit", "--format", "sysctl", "--no-sample", "--profile", "nat-gateway",
                   *tree_args(tree("netns-exec")))
    assert proc.returncode == 0, proc.stderr
    assert "nf_conntrack_tcp_timeout_established = 21600" in proc.stdout
    assert "not the initial network namespace" in proc.stderr
    assert "pod or container spec" in proc.stderr
