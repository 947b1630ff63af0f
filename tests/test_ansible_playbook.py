"""The ct_tune.conntrack collection through a real ansible-playbook (ansible-core from PyPI).

One ansible-playbook run (each costs seconds) against localhost with connection=local and
ANSIBLE_COLLECTIONS_PATH at this checkout; every task's result is registered and written to
a JSON file by a last play, and each play's results are asserted on here.  Apply writes its
files under a scratch root.  As root the whole playbook runs inside a private network
namespace ('ip netns exec'), so the live values written are that namespace's, never the
host's; otherwise a captured host tree's /proc/sys files stand in for them (--procfs).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, materialize

from ct_tune import facts

EST = "net.netfilter.nf_conntrack_tcp_timeout_established"
COLLECTIONS = ROOT / "ansible_collections"


def _ansible_playbook() -> str:
    try:
        import ansible  # noqa: F401
    except ImportError:
        pytest.skip("ansible-core is not installed (pip install -e '.[test]')")
    exe = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or \
        shutil.which("ansible-playbook")
    if exe is None:
        pytest.skip("ansible-playbook is not on PATH")
    return exe


def _ct_tune_bin(tmp: Path) -> Path:
    """A directory with a ct-tune that runs this checkout with this interpreter."""
    bindir = tmp / "bin"
    bindir.mkdir()
    script = bindir / "ct-tune"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m ct_tune \"$@\"\n")
    script.chmod(0o755)
    return bindir


def _playbook(opts: dict, snapshot: Path, scratch: Path, est_file: str, netns_tree: facts.Roots
              ) -> list[dict]:
    """The fleet workflow of the collection's README, in plays whose results are checked."""
    root = opts["root"]
    target = {k: v for k, v in opts.items() if k != "root"}
    apply_opts = {**opts, "sample": False}
    return [
        {"name": "audit", "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "audit this host", "ct_tune.conntrack.audit": {**target, "sample": False},
             "register": "here"},
            {"name": "audit a critical host's snapshot",
             "ct_tune.conntrack.audit": {"facts": str(snapshot)}, "register": "full"},
            {"name": "branch on the audit", "ansible.builtin.set_fact": {
                "needs_tuning": True}, "when": "full.status == 'critical' and "
                "full.changes | length > 0 and full.facts_summary.usage > 0.9"},
            {"name": "never for a critical host", "ansible.builtin.debug": {"msg": "ok"},
             "when": "full.status == 'ok'"},
            {"name": "fail_on warning", "ct_tune.conntrack.audit": {
                "facts": str(snapshot), "fail_on": "warning"}, "ignore_errors": True},
            {"name": "fail_on in check mode too", "ct_tune.conntrack.audit": {
                "facts": str(snapshot), "fail_on": "critical"}, "check_mode": True,
             "ignore_errors": True},
        ]},
        {"name": "apply in check mode", "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "check", "ct_tune.conntrack.apply": apply_opts, "check_mode": True},
            {"name": "nothing written", "ansible.builtin.find": {
                "paths": [root], "recurse": True, "file_type": "any"}},
            {"name": "live value untouched", "ansible.builtin.command": {
                "argv": ["cat", est_file]}, "changed_when": False},
        ]},
        {"name": "apply", "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "apply", "ct_tune.conntrack.apply": apply_opts},
            {"name": "live value set", "ansible.builtin.command": {
                "argv": ["cat", est_file]}, "changed_when": False},
            {"name": "apply again", "ct_tune.conntrack.apply": apply_opts},
            {"name": "check again", "ct_tune.conntrack.apply": apply_opts, "check_mode": True},
        ]},
        {"name": "collect", "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "collect", "ct_tune.conntrack.collect": {
                **{k: v for k, v in target.items() if k in ("procfs", "sysfs")},
                "dest": str(scratch / "snapshot.json"), "sample": False}},
            {"name": "fetch", "ansible.builtin.fetch": {
                "src": str(scratch / "snapshot.json"),
                "dest": str(scratch / "fetched") + "/{{ inventory_hostname }}.json",
                "flat": True}},
        ]},
        {"name": "rollback", "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "rollback", "ct_tune.conntrack.apply": {"root": root,
                                                             "state": "rolled_back"}},
            {"name": "rollback again", "ct_tune.conntrack.apply": {"root": root,
                                                                   "state": "rolled_back"}},
        ]},
        {"name": "failures", "hosts": "all", "gather_facts": False, "tasks": [
            {"name": "not on PATH", "ct_tune.conntrack.audit": {}, "ignore_errors": True,
             "environment": {"PATH": "/var/empty"}},
            {"name": "executable absent", "ct_tune.conntrack.apply": {
                "executable": "/nonexistent/ct-tune", "root": root}, "ignore_errors": True},
            {"name": "busy", "ct_tune.conntrack.apply": {
                **apply_opts, "root": str(scratch / "locked"), "lock_wait": 0},
             "ignore_errors": True},
            # a captured 'ip netns exec' host: files would be the host's, --no-live leaves
            # nothing to do (the files go to the capture's top directory, never /etc)
            {"name": "namespace", "ct_tune.conntrack.apply": {
                "procfs": str(netns_tree.procfs), "sysfs": str(netns_tree.sysfs),
                "live": False, "sample": False}},
        ]},
    ]


def _registered(plays: list[dict], dest: Path) -> list[dict]:
    """Register every task's result and add a last play that writes them all to dest as
    JSON (ansible-core's own callbacks print text; the json one is in ansible.posix)."""
    names = {}
    for play in plays:
        for task in play["tasks"]:
            var = f"r{len(names)}"
            task.setdefault("register", var)
            names[f"{play['name']}/{task['name']}"] = task["register"]
    content = "{" + ", ".join(f'{json.dumps(k)}: {v}' for k, v in names.items()) + "}"
    return [*plays, {"name": "results", "hosts": "all", "gather_facts": False, "tasks": [
        {"name": "write", "ansible.builtin.copy": {
            "content": "{{ " + content + " | to_json }}", "dest": str(dest)},
         "diff": False}]}]


def _results(path: Path) -> dict[tuple[str, str], dict]:
    """{(play, task): the localhost result}."""
    return {tuple(k.split("/", 1)): v for k, v in json.loads(path.read_text()).items()}


@pytest.fixture(scope="module")
def playbook_run(tmp_path_factory):
    """Run the playbook once; (results, scratch dir, namespace or None, seconds)."""
    exe = _ansible_playbook()
    tmp = tmp_path_factory.mktemp("ansible")
    bindir = _ct_tune_bin(tmp)
    full = materialize("nearly-full-drops", tmp / "trees")
    snapshot = tmp / "full.json"
    subprocess.run([sys.executable, "-m", "ct_tune", "collect", "--procfs", str(full.procfs),
                    "--sysfs", str(full.sysfs), "--no-sample", "-o", str(snapshot)],
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    root = tmp / "root"
    root.mkdir()
    ns_cm = None
    if os.geteuid() == 0 and shutil.which("ip"):
        from netns import namespace

        ns_cm = namespace(nft=False)
        ns = ns_cm.__enter__()
        opts: dict = {"root": str(root)}
        est_file = "/proc/sys/" + EST.replace(".", "/")
    else:
        ns = None
        roots = materialize("defaults-16g", tmp / "trees")
        opts = {"root": str(root), "procfs": str(roots.procfs), "sysfs": str(roots.sysfs)}
        est_file = str(roots.procfs / "sys" / EST.replace(".", "/"))
    pb = tmp / "site.yml"
    results = tmp / "results.json"
    netns_tree = materialize("netns-exec", tmp / "trees")
    pb.write_text(json.dumps(_registered(_playbook(opts, snapshot, tmp, est_file, netns_tree),
                                         results), indent=1))
    lock = tmp / "locked/var/lib/ct-tune/lock"
    lock.parent.mkdir(parents=True)
    held = open(lock, "w")  # noqa: SIM115 (held for the whole run)
    fcntl.flock(held, fcntl.LOCK_EX)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "ANSIBLE_COLLECTIONS_PATH": str(ROOT),
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
           "ANSIBLE_HOME": str(tmp / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
           "ANSIBLE_REMOTE_TMP": str(tmp / "ansible-tmp"),
           "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    cmd = [exe, "-i", "localhost,", "-c", "local", "--diff", str(pb)]
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    finally:
        held.close()
        if ns_cm is not None:
            ns_cm.__exit__(None, None, None)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return _results(results), tmp, ns, seconds


def test_audit_returns_findings_usable_in_when(playbook_run):
    res, _, ns, _ = playbook_run
    here = res[("audit", "audit this host")]
    assert here["changed"] is False and here["status"] in ("ok", "info", "warning",
                                                           "critical", "unknown")
    assert here["facts_summary"]["max"] > 0 and here["findings"]
    if ns:
        assert here["facts_summary"]["initial_netns"] is False
    full = res[("audit", "audit a critical host's snapshot")]
    assert full["status"] == "critical" and full["exit_code"] == 2 and full["changed"] is False
    assert full["problems"] and all(f["severity"] in ("warning", "critical")
                                    for f in full["problems"])
    assert res[("audit", "branch on the audit")]["ansible_facts"] == {"needs_tuning": True}
    assert res[("audit", "never for a critical host")].get("skipped") is True


def test_fail_on_fails_the_task(playbook_run):
    res, _, _, _ = playbook_run
    for task in ("fail_on warning", "fail_on in check mode too"):
        r = res[("audit", task)]
        assert r["failed"] is True and r["reason"] == "fail_on"
        assert r["msg"].startswith("conntrack audit status critical (fail_on: ")
        assert "critical conntrack-" in r["msg"]  # names the findings at fault
        assert r["changed"] is False


def test_check_mode_predicts_changed_and_writes_nothing(playbook_run):
    res, _, _, _ = playbook_run
    check = res[("apply in check mode", "check")]
    assert check["changed"] is True and check["report"]["dry_run"] is True
    assert check["state_file"] is None
    assert res[("apply in check mode", "nothing written")]["matched"] == 0
    assert res[("apply in check mode", "live value untouched")]["stdout"] == "432000"
    # --diff: each file before/after and the live values as key = value lines
    diff = check["diff"]
    assert any(d["after_header"].endswith("etc/sysctl.d/99-ct-tune.conf") and
               f"\n{EST} = 86400\n" in d["after"] and d["before"] == "" for d in diff)
    assert {"before": f"{EST} = 432000\n", "after": f"{EST} = 86400\n"}.items() <= \
        next(d for d in diff if d["before_header"].startswith("live values")).items()


def test_apply_changes_then_reports_ok(playbook_run):
    res, tmp, ns, _ = playbook_run
    first = res[("apply", "apply")]
    assert first["changed"] is True and first["diff"]
    # keys left alone are reported as skipped_keys: a 'skipped' key would make Ansible show
    # the whole task as skipped
    assert first.get("skipped") is not True
    if ns:  # max and buckets are the host's, read-only in a network namespace
        assert {s["kind"] for s in first["skipped_keys"]} == {"read-only"}
    assert first["state_file"] == str(tmp / "root/var/lib/ct-tune/rollback.json")
    assert res[("apply", "live value set")]["stdout"] == "86400"
    again = res[("apply", "apply again")]
    assert again["changed"] is False and "diff" not in again
    assert {f["action"] for f in again["files"]} == {"unchanged"}
    assert res[("apply", "check again")]["changed"] is False


def test_collect_writes_a_snapshot_fetch_gathers(playbook_run):
    res, tmp, _, _ = playbook_run
    r = res[("collect", "collect")]
    assert r["changed"] is True and r["dest"] == str(tmp / "snapshot.json")
    fetched = json.loads((tmp / "fetched/localhost.json").read_text())
    assert fetched["schema"] == "ct-tune/facts"
    assert res[("collect", "fetch")]["changed"] is True


def test_rollback_state_restores_once(playbook_run):
    res, tmp, _, _ = playbook_run
    first = res[("rollback", "rollback")]
    assert first["changed"] is True and first["report"]["command"] == "rollback"
    assert not (tmp / "root/etc/sysctl.d/99-ct-tune.conf").exists()
    again = res[("rollback", "rollback again")]
    assert again["changed"] is False and "nothing to roll back" in again["msg"]


def test_busy_fails_and_namespace_skips(playbook_run):
    res, _, _, _ = playbook_run
    busy = res[("failures", "busy")]
    assert busy["failed"] is True and busy["reason"] == "busy"
    assert "retry later or raise lock_wait" in busy["msg"] and busy["changed"] is False
    ns = res[("failures", "namespace")]
    assert ns["skipped"] is True and ns["reason"] == "namespace" and ns["changed"] is False
    assert "non-initial network namespace" in ns["msg"]


def test_missing_ct_tune_fails_naming_the_package(playbook_run):
    res, _, _, seconds = playbook_run
    for task in ("not on PATH", "executable absent"):
        r = res[("failures", task)]
        assert r["failed"] is True and r["reason"] == "not-installed"
        assert "pip install ct-tune" in r["msg"]
    print(f"ansible-playbook run: {seconds:.1f} s")
