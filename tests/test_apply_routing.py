"""apply and audit --format sysctl route around other writers and follow the boot system:
no sysctl.d value kube-proxy undoes at its next start (the skip names its setting), no
modules-load.d or modprobe.d file on OpenWrt, where procd's kmodloader reads neither."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli, tree_args

from ct_tune import facts

FRAGMENT = "etc/sysctl.d/99-ct-tune.conf"


def _root(roots: facts.Roots) -> Path:
    return roots.procfs.parent


def _lines(text: str) -> dict[str, int]:
    """The settings of a sysctl.d fragment (comments dropped)."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^([a-z0-9_.]+) = (\d+)$", text, re.M)}


def _dry_run(roots: facts.Roots) -> str:
    proc = run_cli("apply", "--dry-run", *tree_args(roots), "--root", str(_root(roots)),
                   "--no-live", "--no-sample")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_rewriting_kube_proxy_keys_are_skipped_with_its_flag(tree):
    """kube-proxy 1.30 (flags only) rewrites max and the established timeout whenever they
    differ: neither is in the fragment, and the skip says which flag to change."""
    roots = tree("kube-proxy-1.30-flags")
    out = _dry_run(roots)
    lines = _lines(out.replace("\n+", "\n"))
    assert "net.netfilter.nf_conntrack_max" not in lines
    assert "net.netfilter.nf_conntrack_tcp_timeout_established" not in lines
    skipped = {m.group(1): m.group(2) for m in re.finditer(r"^skipped (\S+) \(.*?\): (.*)$",
                                                            out, re.M)}
    reason = skipped["net.netfilter.nf_conntrack_max"]
    assert "kube-proxy v1.30.2 sets it to 524,288" in reason  # 32768 x 16 CPUs
    assert "--conntrack-max-per-core=" in reason and "kube-proxy's command line" in reason
    reason = skipped["net.netfilter.nf_conntrack_tcp_timeout_established"]
    assert "--conntrack-tcp-timeout-established=86400s" in reason
    # buckets are sized for the max kube-proxy leaves (524,288), not the one never written
    assert lines.get("net.netfilter.nf_conntrack_buckets") == 524288

    sysctl = run_cli("audit", *tree_args(roots), "--no-sample", "--format", "sysctl")
    frag = _lines(sysctl.stdout)
    assert "net.netfilter.nf_conntrack_max" not in frag
    assert "net.netfilter.nf_conntrack_tcp_timeout_established" not in frag
    assert ("not in the fragment: net.netfilter.nf_conntrack_tcp_timeout_established: "
            "kube-proxy v1.30.2") in sysctl.stderr


def test_config_file_field_is_named_when_kube_proxy_reads_one(tree):
    """kube-proxy 1.30 run with --config: the skip names the config field and the file."""
    roots = tree("kube-proxy-1.25-config")
    root = _root(roots)
    # the same node upgraded to 1.30: the image containerd recorded names the version
    for cfg in root.glob("run/containerd/io.containerd.runtime.v2.task/k8s.io/*/config.json"):
        cfg.write_text(cfg.read_text().replace("v1.25.16", "v1.30.2"))
    out = _dry_run(roots)
    assert "net.netfilter.nf_conntrack_tcp_timeout_established = " not in out
    assert re.search(r"^skipped net.netfilter.nf_conntrack_tcp_timeout_established .*"
                     r"tcpEstablishedTimeout: 86400s.* in the conntrack section of "
                     r"/var/lib/kube-proxy/config.conf", out, re.M)


def test_raise_only_kube_proxy_keeps_a_higher_value(tree):
    """kube-proxy 1.25 only raises: a max above its 524,288 holds, so it is written, and
    the fragment says why."""
    roots = tree("kube-proxy-1.25-config")
    proc = run_cli("audit", *tree_args(roots), "--no-sample", "--format", "sysctl")
    frag = _lines(proc.stdout)
    assert frag["net.netfilter.nf_conntrack_max"] > 524288
    assert frag["net.netfilter.nf_conntrack_tcp_timeout_established"] > 7200
    assert "raises it to 524,288 at every start when it is lower: " in proc.stdout
    assert "is above that and holds" in proc.stdout


def test_raise_only_kube_proxy_undoes_a_lower_value(tree):
    """The same 1.25 node with a profile wanting a shorter established timeout than
    kube-proxy's 2 h floor: kube-proxy raises it back, so it is not written."""
    roots = tree("kube-proxy-1.25-config")
    root = _root(roots)
    (root / "proc/4242/root/var/lib/kube-proxy/config.conf").write_text(
        (root / "proc/4242/root/var/lib/kube-proxy/config.conf").read_text().replace(
            "tcpEstablishedTimeout: 2h0m0s", "tcpEstablishedTimeout: 168h0m0s"))
    out = _dry_run(roots)
    assert "nf_conntrack_tcp_timeout_established = " not in out
    assert re.search(r"^skipped net.netfilter.nf_conntrack_tcp_timeout_established .*raises "
                     r"it to 604,800 at every start when it is lower.*tcpEstablishedTimeout: "
                     r"86400s", out, re.M)


def test_openwrt_writes_no_modules_load_d_and_no_modprobe_d(tree):
    """procd: kmodloader loads /etc/modules.d (kmod-nf-conntrack's entry is there), reads
    neither modules-load.d nor modprobe.d; a real apply writes the sysctl.d fragment only."""
    roots = tree("openwrt")
    root = _root(roots)
    before = {p.relative_to(root) for p in (root / "etc").rglob("*")}
    out = _dry_run(roots)
    assert re.findall(r"^create (\S+):$", out, re.M) == [f"{root}/{FRAGMENT}"]
    assert "OpenWrt's /etc/init.d/sysctl applies this at boot" in out
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-live",
                   "--no-sample")
    assert proc.returncode == 0, proc.stderr
    after = {p.relative_to(root) for p in (root / "etc").rglob("*")}
    assert after - before == {Path(FRAGMENT)}
    frag = _lines((root / FRAGMENT).read_text())
    assert frag and all(k.startswith("net.netfilter.nf_conntrack_") for k in frag)
    assert not (root / "etc/modules-load.d").exists()
    assert not (root / "etc/modprobe.d").exists()


def test_openwrt_without_modules_d_entry_says_how_to_load_it(tree):
    roots = tree("openwrt-no-modules-d")
    out = _dry_run(roots)
    assert re.findall(r"^create (\S+):$", out, re.M) == [f"{_root(roots)}/{FRAGMENT}"]
    assert ("note: no /etc/modules.d entry loads nf_conntrack" in out
            and "echo nf_conntrack > /etc/modules.d/nf-conntrack" in out)


def test_k3s_in_docker_read_only_max_names_kube_proxy(tree):
    """k3s in Docker: max is read-only; when k3s's kube-proxy would still size it, its
    write fails and it exits: the skip says to set conntrack-max-per-core=0 in k3s's
    kube-proxy-arg; nothing is written live either way."""
    roots = tree("k3s-in-docker")
    root = _root(roots)
    # k3s's kube-proxy told to size max itself: 65536 x 8 CPUs, not the 262,144 it has
    (root / "proc/1/root/etc/rancher/k3s/config.yaml").write_text(
        'kube-proxy-arg:\n  - "conntrack-max-per-core=65536"\n')
    proc = run_cli("apply", "--dry-run", *tree_args(roots), "--no-sample")
    assert proc.returncode == 0, proc.stderr
    skip = re.search(r"^skipped net.netfilter.nf_conntrack_max .*$", proc.stdout, re.M)
    assert skip and "read-only here" in skip.group(0)
    assert ("the write fails and kube-proxy exits at start: set "
            '"conntrack-max-per-core=0" in kube-proxy-arg in /etc/rancher/k3s/config.yaml'
            in skip.group(0))
    assert not re.search(r"^set .*nf_conntrack_max", proc.stdout, re.M)


def test_live_apply_leaves_kube_proxy_keys_alone(tree):
    """A real apply (files and live values) on a kube-proxy 1.30 node that also sets the UDP
    timeouts: nothing kube-proxy rewrites is written, live or in the fragment, and each skip
    names the flag; the rest (buckets) is applied."""
    roots = tree("kube-proxy-1.30-flags")
    (roots.procfs / "4242/cmdline").write_bytes(
        b"/opt/kubernetes/v1.30.2/bin/kube-proxy\0--conntrack-udp-timeout=45s\0"
        b"--conntrack-udp-timeout-stream=200s\0")
    owned = ("nf_conntrack_max", "nf_conntrack_tcp_timeout_established",
             "nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream")
    nf = roots.procfs / "sys/net/netfilter"
    before = {k: (nf / k).read_text() for k in owned}
    proc = run_cli("apply", *tree_args(roots), "--root", str(_root(roots)), "--no-sample",
                   "--profile", "nat-gateway")  # wants udp 60 s / 180 s, established 6 h
    assert proc.returncode == 0, proc.stderr
    assert {k: (nf / k).read_text() for k in owned} == before
    assert (nf / "nf_conntrack_buckets").read_text().strip() == "524288"
    frag = _lines((_root(roots) / FRAGMENT).read_text())
    assert not {f"net.netfilter.{k}" for k in owned} & set(frag)
    assert ("skipped net.netfilter.nf_conntrack_udp_timeout (30 s -> 60 s (1 min)): kube-proxy "
            "v1.30.2 sets it to 45 at every start whenever it differs: a sysctl.d value of 60 "
            "is undone; set --conntrack-udp-timeout=60s") in proc.stdout
    assert "set --conntrack-udp-timeout-stream=180s" in proc.stdout


def test_buckets_below_kube_proxys_max_quarter_are_not_pinned(tree):
    """kube-proxy raises hashsize to max / 4 at start (never lowers it): a smaller buckets
    value would be undone, so the plan skips it, routed through kube-proxy's max setting."""
    from ct_tune import engine, plan, profiles, writers

    roots = tree("kube-proxy-1.30-flags")
    host = facts.collect(roots)
    host["writers"] = writers.collect(roots)  # as the CLI gathers them
    prof = profiles.get(profiles.load(), "default")
    key = "net.netfilter.nf_conntrack_buckets"
    f = engine.Finding(rule="hash-buckets", title="t", severity="info", parameter=key,
                       current=262144, recommended=65536, summary="s", explanation="",
                       scope="here")
    p = plan.build([f], host, prof)
    assert p.value(key) is None
    (skip,) = p.skips
    assert "raises it to 131,072 (its max / 4) at every start" in skip.reason
    assert "--conntrack-max-per-core=" in skip.reason
    assert p.kept == {key: 262144}  # kube-proxy never lowers it: the current value stays
    f2 = engine.Finding(**{**f.__dict__, "recommended": 262144 * 2})
    assert plan.build([f2], host, prof).value(key) == 524288
