"""Who else writes the conntrack keys, and which init applies sysctl.d: detection from
captured trees and from this host's /proc, the kube-proxy model by release, capture and
snapshot round trips."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import materialize, run_cli, tree_args

from ct_tune import bootinit, facts, kubeproxy, snapshot, writers
from ct_tune.capture import capture
from ct_tune.errors import InputError


def test_kube_proxy_with_config_file_and_image_version(tree):
    w = writers.collect(tree("kube-proxy-1.25-config"))
    kp = w["kube_proxy"]
    assert kp["source"] == "kube-proxy" and kp["pid"] == 4242
    assert kp["config_file"] == "/var/lib/kube-proxy/config.conf"
    # read through /proc/4242/root (the pod's view), nulls mean "default"
    assert kp["config"] == {"tcpEstablishedTimeout": 7200, "tcpCloseWaitTimeout": 3600}
    assert kp["config_read_from"].endswith("proc/4242/root/var/lib/kube-proxy/config.conf")
    assert kp["version"] == "v1.25.16" and "registry.k8s.io/kube-proxy" in kp["version_source"]
    assert w["init"] == "systemd" and "/run/systemd/system" in w["init_evidence"]
    assert w["containers"]["in_container"] is False


def test_kube_proxy_flags_only_and_version_from_path(tree):
    kp = writers.collect(tree("kube-proxy-1.30-flags"))["kube_proxy"]
    assert kp["config"] is None and kp["config_file"] is None
    assert kp["flags"] == {"maxPerCore": 32768, "tcpEstablishedTimeout": 7200}
    assert kp["version"] == "v1.30.2" and kp["version_source"] == "/proc/4242/cmdline"


def test_k3s_in_docker(tree):
    w = writers.collect(tree("k3s-in-docker"))
    assert w["kube_proxy"]["source"] == "k3s"
    assert w["kube_proxy"]["flags"] == {"maxPerCore": 0}
    assert w["kube_proxy"]["version"] is None
    assert w["containers"] == {"in_container": True, "evidence": ["/.dockerenv"]}
    assert w["init"] is None


def test_openwrt(tree):
    w = writers.collect(tree("openwrt"))
    assert w["init"] == "procd" and w["kube_proxy"] is None
    assert w["distro"]["id"] == "openwrt" and w["distro"]["version"] == "23.05.3"
    assert w["modules_d"] == [{"module": "nf_conntrack", "file": "/etc/modules.d/nf-conntrack"}]
    assert writers.collect(tree("openwrt-no-modules-d"))["modules_d"] == []


def test_k3s_disable_kube_proxy_means_no_writer(tree):
    roots = tree("k3s-in-docker")
    (roots.procfs / "1/root/etc/rancher/k3s/config.yaml").write_text(
        "disable-kube-proxy: true\n")
    assert writers.collect(roots)["kube_proxy"] is None


def test_pid_scan_is_bounded_and_skips_special_files(tree, monkeypatch):
    roots = tree("kube-proxy-1.30-flags")
    for pid in (7, 8, 9):
        (roots.procfs / str(pid)).mkdir()
    os.mkfifo(roots.procfs / "7/cmdline")  # would block a naive read
    (roots.procfs / "8/cmdline").write_bytes(b"\xff\xfe not text")
    monkeypatch.setattr(writers, "MAX_PIDS", 3)
    w = writers.collect(roots)
    # 1, 7, 8 scanned; 9 and kube-proxy's 4242 are past the bound
    assert (w["pids_scanned"], w["pids_truncated"], w["kube_proxy"]) == (3, True, None)


def test_config_sections():
    yaml = "kind: KubeProxyConfiguration\nconntrack:\n  maxPerCore: 0  # leave it\n" \
           "  min: 262144\n  tcpEstablishedTimeout: 24h0m0s\n  udpTimeout: 0s\nmode: ipvs\n" \
           "iptables:\n  min: 5\n"
    assert writers.conntrack_section(yaml) == {"maxPerCore": 0, "min": 262144,
                                               "tcpEstablishedTimeout": 86400, "udpTimeout": 0}
    js = json.dumps({"conntrack": {"maxPerCore": 65536, "tcpCloseWaitTimeout": "90m"}})
    assert writers.conntrack_section(js) == {"maxPerCore": 65536, "tcpCloseWaitTimeout": 5400}
    assert writers.conntrack_section("mode: ipvs\n") is None
    assert writers.conntrack_section("{not json") is None


@pytest.mark.parametrize("text,seconds", [("24h0m0s", 86400), ("1h", 3600), ("90s", 90),
                                          ("1h30m", 5400), ("0", 0), ("0s", 0),
                                          ("soon", None), ("5x", None)])
def test_parse_duration(text, seconds):
    assert kubeproxy.parse_duration(text) == seconds


def test_process_kinds():
    assert writers.kind_of(["/usr/local/bin/kube-proxy", "--v=2"]) == "kube-proxy"
    assert writers.kind_of(["/hyperkube", "kube-proxy"]) == "kube-proxy"
    assert writers.kind_of(["/usr/local/bin/k3s agent"]) == "k3s"
    assert writers.kind_of(["k3s", "server", "--disable=traefik"]) == "k3s"
    assert writers.kind_of(["/usr/bin/kube-proxy-wrapper"]) is None
    args, off = writers.k3s_proxy_args('kube-proxy-arg: ["conntrack-min=1", "v=2"]\n')
    assert (args, off) == (["conntrack-min=1", "v=2"], False)


@pytest.mark.parametrize("version,max_mode,timeout_mode,cap", [
    ((1, 22), "rewrite", "rewrite", None), ((1, 23), "raise", "raise", None),
    ((1, 28), "raise", "raise", None), ((1, 29), "rewrite", "rewrite", None),
    ((1, 35), "rewrite", "rewrite", None), ((1, 36), "rewrite", "rewrite", 1048576),
    ((1, 38), "raise", "rewrite", 1048576)])
def test_behaviour_by_release(version, max_mode, timeout_mode, cap):
    b = kubeproxy.behaviour(version)
    assert (b["max_mode"], b["timeout_mode"], b["cap"]) == (max_mode, timeout_mode, cap)


def test_target_max_floor_and_cap():
    conf = {"maxPerCore": 32768, "min": 131072}
    old, new = kubeproxy.behaviour((1, 30)), kubeproxy.behaviour((1, 36))
    assert kubeproxy.target_max(conf, 2, old) == 131072  # min wins on small hosts
    assert kubeproxy.target_max(conf, 64, old) == 2097152  # no cap before 1.36
    assert kubeproxy.target_max(conf, 64, new) == 1048576
    assert kubeproxy.target_max({"maxPerCore": 0, "min": 131072}, 64, new) == 0


def test_after_start_raise_versus_rewrite():
    writers_facts = {"kube_proxy": {"source": "kube-proxy", "flags": {}, "config": None,
                                    "version": "v1.25.0"}}
    raise_only = kubeproxy.resolve(writers_facts, False, 8)
    assert kubeproxy.after_start(raise_only, "nf_conntrack_max", 1_000_000) == 1_000_000
    assert kubeproxy.after_start(raise_only, "nf_conntrack_max", 65536) == 262144
    writers_facts["kube_proxy"]["version"] = "v1.31.1"
    rewrite = kubeproxy.resolve(writers_facts, False, 8)
    assert kubeproxy.after_start(rewrite, "nf_conntrack_max", 1_000_000) == 262144
    assert kubeproxy.after_start(rewrite, "nf_conntrack_tcp_timeout_established", 7200) == 86400
    # nothing detected: only a profile's assumption makes one up
    assert kubeproxy.resolve({"kube_proxy": None}, False, 8) is None
    assumed = kubeproxy.resolve(None, True, 8)
    assert assumed["assumed"] and assumed["release"] == "1.37"


def test_boot_system_assumes_systemd_and_says_so():
    assert bootinit.boot_system(None)["note"] == " (init system not detected: systemd assumed)"
    assert bootinit.boot_system({"init": "procd"})["early_fix"] == (
        "echo nf_conntrack > /etc/modules.d/nf-conntrack")


def test_capture_keeps_the_evidence_and_drops_secrets(tree, tmp_path):
    for name in ("kube-proxy-1.25-config", "k3s-in-docker", "openwrt"):
        roots = tree(name)
        if name == "k3s-in-docker":
            cfg = roots.procfs / "1/root/etc/rancher/k3s/config.yaml"
            cfg.write_text("token: s3cret-join-token\n" + cfg.read_text())
        out = tmp_path / f"cap-{name}"
        capture(roots, out)
        again = writers.collect(facts.Roots(out / "proc", out / "sys"))
        before = writers.collect(roots)
        for w in (again, before):
            if w["kube_proxy"]:
                w["kube_proxy"]["config_read_from"] = None
        assert again == before, name
        texts = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
        assert not any(b"s3cret" in t for t in texts)


def test_snapshot_validates_the_writers_section(tree, tmp_path):
    roots = tree("kube-proxy-1.30-flags")
    data = facts.collect(roots)
    data["writers"] = writers.collect(roots)
    snapshot.validate(json.loads(snapshot.dumps(data)), "s.json")
    data["writers"]["kube_proxy"]["flags"]["maxPerCore"] = "lots"
    with pytest.raises(InputError, match=r"writers\.kube_proxy\.flags\.maxPerCore"):
        snapshot.validate(json.loads(snapshot.dumps(data)), "s.json")
    del data["writers"]
    snapshot.validate(json.loads(snapshot.dumps(data)), "s.json")  # older snapshots load


def test_collect_and_audit_carry_writers(tmp_path):
    roots = materialize("kube-proxy-1.30-flags", tmp_path)
    out = run_cli("collect", *tree_args(roots), "--no-sample")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["writers"]["kube_proxy"]["version"] == "v1.30.2"
    snap = tmp_path / "s.json"
    snap.write_text(out.stdout)
    audit = run_cli("audit", "--facts", str(snap), "--format", "json")
    found = {f["rule"]: f for f in json.loads(audit.stdout)["findings"]}
    assert "kube-proxy v1.30.2 sets it to 524,288" in found["conntrack-max"]["summary"]


@contextlib.contextmanager
def fake_kube_proxy(flags: str) -> Iterator[subprocess.Popen]:
    """A real process in this host's /proc whose argv[0] is kube-proxy (bash exec -a),
    running until the block ends."""
    proc = subprocess.Popen(
        ["bash", "-c", f"exec -a /usr/local/bin/kube-proxy {sys.executable} -c "
                       f"'import time; time.sleep(30)' {flags}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"/usr/local/bin/kube"):
                break
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_live_process_named_kube_proxy_is_found():
    """A real process in this host's /proc whose argv[0] is kube-proxy (bash exec -a)."""
    with fake_kube_proxy("--conntrack-min=300000 --conntrack-tcp-timeout-close-wait=2h") as proc:
        w = writers.collect(facts.Roots())
        if w["pids_truncated"] and (w["kube_proxy"] or {}).get("pid") != proc.pid:
            pytest.skip(f"more than {writers.MAX_PIDS} processes here")
        kp = w["kube_proxy"]
        assert kp is not None and kp["pid"] == proc.pid
        assert kp["flags"] == {"min": 300000, "tcpCloseWaitTimeout": 7200}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
def test_other_users_process_root_is_skipped_not_an_error():
    """As an unprivileged user, another user's /proc/PID/root cannot be searched: the
    kube-proxy is still found from its cmdline, its config file counts as unreadable."""
    with fake_kube_proxy("--config=/var/lib/kube-proxy/config.conf") as proc:
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child drops to nobody and reports what it saw
            try:
                os.setgid(65534)
                os.setuid(65534)
                kp = writers.collect(facts.Roots())["kube_proxy"]
                os.write(write, json.dumps(kp).encode())
            except BaseException as e:  # reported to the parent
                os.write(write, json.dumps({"error": repr(e)}).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        with os.fdopen(read) as f:
            kp = json.loads(f.read())
        assert "error" not in (kp or {}), kp
        assert kp["pid"] == proc.pid and kp["config_file"] == "/var/lib/kube-proxy/config.conf"
        assert kp["config"] is None
