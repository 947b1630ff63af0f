"""A captured tree replays the host: everything audit reads is in it, and the findings agree.

The file-coverage test traces the files a live audit really opens (an audit hook on
'open' events, in a child process) and checks each has its copy in a capture of the same
host, so a new reader in facts.py or the sampler cannot silently escape the capture.
The real-kernel tests (root) audit this host and a throwaway network namespace live and
through their capture, and compare the findings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import flowgen
import pytest
from conftest import ROOT, run_cli, tree_args
from netns import namespace, require_netns, write_sysctl

from ct_tune import capture as capture_mod
from ct_tune import facts
from ct_tune.sampler import timeouts_of

LIVE_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")

TRACER = """
import json, os, sys
opened = []
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.fsdecode(os.fspath(args[0])))
sys.addaudithook(hook)
from ct_tune import cli
sys.argv = ["ct-tune", *sys.argv[1:]]
try:
    cli.main()
except SystemExit:
    pass
with open(os.environ["CT_TUNE_TRACE_OUT"], "w") as f:
    json.dump(sorted(set(opened)), f)
"""


def traced_audit(tmp_path: Path, *args: str) -> list[str]:
    """Absolute paths a live `ct-tune audit` opened, minus ct-tune's own files."""
    out = tmp_path / "trace.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CT_TUNE_TRACE_OUT": str(out)}
    proc = subprocess.run([sys.executable, "-c", TRACER, "audit", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.exists(), proc.stderr
    own = (str(ROOT) + "/", sys.prefix + "/", sys.base_prefix + "/",
           os.environ["CT_TUNE_CACHE_DIR"] + "/")
    return [p for p in json.loads(out.read_text())
            if p.startswith("/") and not p.startswith(own) and "/python3" not in p
            and p != str(out)]


def test_capture_holds_every_file_a_live_audit_opens(tmp_path: Path):
    if not LIVE_MAX.exists():
        pytest.skip("nf_conntrack is not loaded on this host: a live audit reads little")
    opened = traced_audit(tmp_path, "--format", "json")
    out = tmp_path / "tree"
    capture_mod.capture(facts.Roots(), out)
    assert "/proc/net/stat/nf_conntrack" in opened or "/proc/sys/net/netfilter/nf_conntrack_max" \
        in opened, opened  # the trace works
    missing = []
    for path in opened:
        if not os.access(path, os.R_OK) or os.path.isdir(path):
            continue  # the replay's open fails the same way
        if path.startswith(tuple(f"/{d}/" for d in ("etc", "run", "usr", "lib"))) and \
                path.endswith(".rules") and "nf_conntrack" not in Path(path).read_text(
                    errors="replace"):
            continue  # capture keeps only udev rules that mention nf_conntrack (documented)
        if path.startswith("/proc/self/fd/"):
            continue  # safeio reopens a checked O_PATH descriptor: the file itself is listed
        if re.fullmatch(r"/proc/\d+/cmdline", path) and not re.search(
                rb"kube-proxy|k3s|hyperkube", Path(path).read_bytes()):
            continue  # the writers scan reads every process; capture keeps the writers'
        if re.fullmatch(r"/proc/\d+/net/stat/nf_conntrack", path):
            continue  # other namespaces' counters: capture keeps the scan, not each file
        if not (out / path.lstrip("/")).exists():
            missing.append(path)
    assert missing == []


def test_capture_copies_the_table_dump_so_the_replay_samples_the_same_entries(
        tree, tmp_path: Path):
    src = tree("defaults-16g")
    host = facts.collect(src)
    lines = list(flowgen.lines({"class": "tcp/ESTABLISHED", "count": 300, "dport": 5432,
                                "idle": [100, 90000]}, timeouts_of(host)))
    lines += list(flowgen.lines({"class": "udp/unreplied", "count": 50}, timeouts_of(
        host), start=300))
    (src.procfs / "net/nf_conntrack").write_text("\n".join(lines) + "\n")
    out = tmp_path / "captured"
    assert run_cli("capture", *tree_args(src), str(out)).returncode == 0
    replay = facts.Roots(out / "proc", out / "sys")
    assert (out / "proc/net/nf_conntrack").read_text() == (
        src.procfs / "net/nf_conntrack").read_text()
    a = json.loads(run_cli("collect", *tree_args(src)).stdout)["flows"]
    b = json.loads(run_cli("collect", *tree_args(replay)).stdout)["flows"]
    assert b["classes"]["tcp/ESTABLISHED"]["entries"] == 300
    assert {**a, "source": None, "seconds": None} == {**b, "source": None, "seconds": None}
    # and --no-table leaves it out: the replay then has no sample, as audit --no-sample
    out2 = tmp_path / "notable"
    assert run_cli("capture", "--no-table", *tree_args(src), str(out2)).returncode == 0
    assert not (out2 / "proc/net/nf_conntrack").exists()


def test_a_replayed_tree_with_the_builtin_marker_is_built_in(tree, tmp_path: Path):
    src = tree("defaults-16g")
    assert facts.collect(src)["conntrack"]["builtin"] is None  # a tree cannot tell alone
    (src.sysfs / facts.BUILTIN_MARKER).write_text("1\n")
    assert facts.collect(src)["conntrack"]["builtin"] is True


# --- against the real kernel ----------------------------------------------------------

def _normalized(report: dict, tree: Path | None) -> list[dict]:
    """The findings, with what is allowed to differ between a live audit and its replay
    taken out:
    - where the files were read (/proc/... live, TREE/proc/... replayed): the same files;
    - /proc/uptime: it is the clock.  A replay reports the host as it was when captured
      (facts._uptime), a live audit a few seconds later; only table-drops uses it
      (drops per day since boot), and with the same counters the difference is the
      seconds between the two reads."""
    text = json.dumps(report["findings"])
    if tree is not None:
        text = text.replace(f"under {tree} (", "under / (").replace(str(tree), "")
    out = json.loads(text)
    for f in out:
        if f["rule"] == "table-drops":
            for k in ("uptime_days", "per_day"):
                f["evidence"].pop(k, None)
            f["explanation"] = re.sub(r"\([0-9.,]+ days ago: [0-9.,]+ drops per day on average\)",
                                      "(UPTIME)", f["explanation"])
    return out


def _live_and_replayed(tmp_path: Path, ns: str | None, *args: str,
                       source: str = "auto") -> tuple[list, list]:
    out = tmp_path / "tree"
    cap = run_cli("capture", "--table-source", source, str(out), netns=ns)
    assert cap.returncode == 0, cap.stderr
    live = run_cli("audit", "--format", "json", "--table-source", source, *args, netns=ns)
    assert live.returncode in (0, 1, 2), live.stderr
    replay = run_cli("audit", "--format", "json", "--procfs", str(out / "proc"), "--sysfs",
                     str(out / "sys"), *args)
    assert replay.returncode == live.returncode, replay.stderr
    return (_normalized(json.loads(live.stdout), None),
            _normalized(json.loads(replay.stdout), out))


@pytest.mark.root
def test_this_host_audits_the_same_live_and_from_its_capture(tmp_path: Path):
    require_netns()
    # This host is not quiet like a namespace: a connection opened or closed between the
    # capture and the live audit changes the count.  The two must agree on one of three
    # tries; a replay that misses something differs on every try.
    tries = 0
    while tries < 3:
        tries += 1
        shutil.rmtree(tmp_path / "tree", ignore_errors=True)
        live, replayed = _live_and_replayed(tmp_path, None)
        if replayed == live:
            break
    assert [f["rule"] for f in replayed] == [f["rule"] for f in live]
    assert replayed == live, f"differs on {tries} tries"
    # and the files apply would write are the same (a built-in module needs no
    # modules-load.d or modprobe.d file: the replay must know it is built in)
    out, scratch = tmp_path / "tree", tmp_path / "scratch"
    scratch.mkdir()

    def planned(*args: str) -> list[str]:
        proc = run_cli("apply", "--dry-run", "--no-live", "--root", str(scratch), *args)
        assert proc.returncode == 0, proc.stderr
        return [ln for ln in proc.stdout.splitlines() if ln.startswith(("create ", "skipped "))]

    assert planned("--procfs", str(out / "proc"), "--sysfs", str(out / "sys")) == planned()


@pytest.mark.root
@pytest.mark.parametrize("source", ["auto", "conntrack"])
def test_a_namespace_with_flows_audits_the_same_live_and_from_its_capture(
        tmp_path: Path, source: str):
    """source "conntrack": the table as a kernel without procfs dump gives it (ctnetlink,
    conntrack -L), captured and replayed from the tree."""
    import flowmix
    from test_realkernel_flows import Mix

    if source == "conntrack" and shutil.which("conntrack") is None:
        pytest.skip("needs conntrack(8) (conntrack-tools)")
    with namespace() as ns:
        # long enough that no flow of the mix expires between the two reads
        write_sysctl(ns, "net.netfilter.nf_conntrack_udp_timeout", 600)
        write_sysctl(ns, "net.netfilter.nf_conntrack_icmp_timeout", 600)
        mix = Mix(ns)
        try:
            time.sleep(1)
            live, replayed = _live_and_replayed(tmp_path, ns, "--profile", "nat-gateway",
                                                source=source)
        finally:
            mix.close()
    rules = [f["rule"] for f in live]
    assert "netns-readonly" in rules and "timeout-projection" in rules
    assert [f["rule"] for f in replayed] == rules
    assert replayed == live
    # the replay sampled the mix itself, from the tree (procfs or conntrack -L lines)
    dump = (tmp_path / "tree/proc/net/nf_conntrack").read_text().splitlines()
    assert len(dump) == (flowmix.N_UDP_UNREPLIED + flowmix.N_UDP_REPLIED + flowmix.N_TCP_EST
                         + flowmix.N_TCP_TW + flowmix.N_ICMP)
    assert all(line.startswith("ipv4") == (source == "auto") for line in dump)


@pytest.mark.root
def test_nf_conntrack_built_in_here_is_built_in_in_the_replay(tmp_path: Path):
    require_netns()
    live = facts.collect(facts.Roots())["conntrack"]["builtin"]
    out = tmp_path / "tree"
    capture_mod.capture(facts.Roots(), out)
    assert facts.collect(facts.Roots(out / "proc", out / "sys"))["conntrack"]["builtin"] is live


@pytest.mark.root
def test_a_read_only_proc_mount_is_read_only_in_the_replay(tree, tmp_path: Path):
    """An unprivileged container's /proc is mounted read-only: every key is unwritable there,
    whatever its mode, and the capture must say so (it keeps modes, not mounts)."""
    require_netns()
    src = tree("defaults-16g")
    out = tmp_path / "captured"
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (f"mount --bind {src.procfs} {ro} && mount -o remount,ro,bind {ro} && "
              f"{sys.executable} -m ct_tune capture --procfs {ro} --sysfs {src.sysfs} {out} && "
              f"{sys.executable} -m ct_tune collect --no-sample --procfs {ro} --sysfs {src.sysfs}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False)
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"cannot make a private mount namespace: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    live = json.loads(proc.stdout)["sysctl"]
    assert live["net.netfilter.nf_conntrack_udp_timeout"]["writable"] is False
    replay = facts.collect(facts.Roots(out / "proc", out / "sys"))["sysctl"]
    assert {k: v["writable"] for k, v in replay.items()} == {
        k: v["writable"] for k, v in live.items()}


def test_a_capture_that_runs_out_of_space_says_so_and_leaves_no_truncated_dump(
        tree, tmp_path: Path):
    """A truncated table dump would replay as a smaller table: it is removed, and the
    error is one line naming the file (here the file size limit stands in for a full
    disk)."""
    src = tree("defaults-16g")
    host = facts.collect(src)
    lines = flowgen.lines({"class": "tcp/ESTABLISHED", "count": 2000}, timeouts_of(host))
    (src.procfs / "net/nf_conntrack").write_text("\n".join(lines) + "\n")
    out = tmp_path / "captured"
    child = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)); "
             "from ct_tune.cli import main; sys.argv = ['ct-tune', *sys.argv[1:]]; main()")
    proc = subprocess.run([sys.executable, "-c", child, "capture", *tree_args(src), str(out)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3
    assert proc.stderr.splitlines() == [
        f"ct-tune: {out}/proc/net/nf_conntrack: cannot write: File too large"]
    assert not (out / "proc/net/nf_conntrack").exists()
