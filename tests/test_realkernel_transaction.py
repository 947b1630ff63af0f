"""The apply transaction against the real kernel, inside throwaway network namespaces:
a value the kernel stores otherwise than written, and apply killed at random moments.

Files go to a scratch --root; live values are the namespace's own /proc/sys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from netns import namespace, sh
from test_realkernel_apply import UDP, netfilter_values

pytestmark = pytest.mark.root

STATE_DIR = "var/lib/ct-tune"

# A kernel that stores 61 when asked for 60 (as one that clamps or normalises would),
# and any other replacement given in FAKE_KERNEL: every write of the UDP timeout goes
# through open(), whatever opens it.
NORMALISING_KERNEL = """
import builtins, io, json, os, runpy, sys
real_open = io.open
REPLACE = json.loads(os.environ.get("FAKE_KERNEL", '{"60": "61"}'))
class Normalising:
    def __init__(self, f):
        self._f = f
    def write(self, s):
        for wrote, stored in REPLACE.items():
            s = s.replace(wrote, stored)
        return self._f.write(s)
    def __enter__(self):
        self._f.__enter__()
        return self
    def __exit__(self, *exc):
        return self._f.__exit__(*exc)
    def __getattr__(self, name):
        return getattr(self._f, name)
def fake_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if "w" in mode and str(file).endswith("nf_conntrack_udp_timeout"):
        return Normalising(f)
    return f
builtins.open = io.open = fake_open
sys.argv = ["ct-tune", *sys.argv[1:]]
runpy.run_module("ct_tune", run_name="__main__")
"""


@pytest.fixture
def ns():
    with namespace(nft=False) as name:
        yield name


def test_a_value_read_back_otherwise_is_restored_too_and_exits_3(ns, tmp_path):
    script = tmp_path / "kernel.py"
    script.write_text(NORMALISING_KERNEL)
    root = tmp_path / "root"
    values = netfilter_values(ns)
    proc = sh("env", f"PYTHONPATH={ROOT}", sys.executable, str(script), "apply", "--root",
              str(root), "--profile", "nat-gateway", "--no-sample", ns=ns, check=False)
    assert proc.returncode == 3, proc.stderr
    err = proc.stderr.strip()
    assert "\n" not in err, err
    assert f"cannot set {UDP} = 60: read back '61'" in err
    # the mismatched key was changed (30 -> 61): it is restored with the one before it
    assert "restored 2 live value(s)" in err and f"{UDP} = 30" in err
    assert netfilter_values(ns) == values
    assert not (root / "etc").exists()
    # the host is as before, so no pending state blocks the next apply
    assert not (root / STATE_DIR / "pending.json").exists()
    assert run_cli("apply", "--root", str(root), "--profile", "nat-gateway", "--no-sample",
                   netns=ns).returncode == 0


def test_a_restore_that_fails_too_exits_5_and_keeps_the_state_for_rollback(ns, tmp_path):
    """The kernel stores 61 for 60 and 31 for 30: the mismatched key cannot be put back
    either.  Exit 5, and pending.json stays until a rollback makes the host as before."""
    script = tmp_path / "kernel.py"
    script.write_text(NORMALISING_KERNEL)
    root = tmp_path / "root"
    values = netfilter_values(ns)
    proc = sh("env", f"PYTHONPATH={ROOT}", 'FAKE_KERNEL={"60": "61", "30": "31"}',
              sys.executable, str(script), "apply", "--root", str(root), "--profile",
              "nat-gateway", "--no-sample", ns=ns, check=False)
    assert proc.returncode == 5, proc.stderr
    assert f"COULD NOT RESTORE: {UDP} (wanted 30): read back '31'" in proc.stderr
    assert (root / STATE_DIR / "pending.json").exists()
    back = run_cli("rollback", "--root", str(root), netns=ns)
    assert back.returncode == 0, back.stderr
    assert netfilter_values(ns) == values
    assert not (root / STATE_DIR / "pending.json").exists()


ADMIN = "# admin\nnet.netfilter.nf_conntrack_udp_timeout = 45\n"
MODPROBE_OURS = ("# /etc/modprobe.d/ct-tune.conf: nf_conntrack module options written by "
                 "ct-tune 0.0.1\noptions nf_conntrack hashsize=4096\n")


def host_tree(root: Path) -> None:
    """A Debian-like /etc: the admin's sysctl.conf linked as 99-sysctl.conf, a mask, an
    older fragment to replace and a module file an earlier apply wrote that is now
    removed."""
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/sysctl.conf").write_text(ADMIN)
    (root / "etc/sysctl.d/99-sysctl.conf").symlink_to("../sysctl.conf")
    (root / "etc/sysctl.d/10-mask.conf").symlink_to("/dev/null")
    (root / "etc/sysctl.d/99-ct-tune.conf").write_text(
        "# old\nnet.netfilter.nf_conntrack_udp_timeout = 40\n")
    (root / "etc/modprobe.d").mkdir()
    (root / "etc/modprobe.d/ct-tune.conf").write_text(MODPROBE_OURS)


# Runs inside the namespace.  ct-tune is imported once; each apply is a forked child
# running the real entry point, killed with SIGKILL: after a random delay from its
# start (a kill before anything is saved), or a random delay after its saved state
# appears (a kill inside the transaction).  Each time, rollback (the real entry point,
# in-process) must put every file, link and live value back byte for byte.
KILL_LOOP = """
import json, os, random, signal, sys, time
from pathlib import Path
from ct_tune import cli
from treesnap import snapshot

root, runs = Path(sys.argv[1]), int(sys.argv[2])
state = root / "var/lib/ct-tune"
apply = ["apply", "--root", str(root), "--profile", "nat-gateway", "--no-sample"]
netfilter = Path("/proc/sys/net/netfilter")

def values():
    return {p.name: p.read_text() for p in sorted(netfilter.iterdir())
            if p.is_file() and p.name != "nf_conntrack_count"}

def main(args):
    sys.argv = ["ct-tune", *args]
    out = open(os.devnull, "w")
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = out
    try:
        cli.main()
        return 0
    except SystemExit as e:
        return e.code
    finally:
        sys.stdout, sys.stderr = saved
        out.close()

def saved():
    return (state / "pending.json").exists() or (state / "rollback.json").exists()

def start_apply():
    pid = os.fork()
    if pid == 0:
        os._exit(main(apply) or 0)
    return pid

files, live = snapshot(root / "etc"), values()
# calibrate (twice: the first run fills the expression cache): how long an apply takes,
# and how long after its state appears it ends
for _ in range(2):
    t0 = time.monotonic()
    pid = start_apply()
    while not saved():
        time.sleep(0.0002)
    t1 = time.monotonic()
    os.waitpid(pid, 0)
    t2 = time.monotonic()
    assert main(["rollback", "--root", str(root)]) == 0
    assert snapshot(root / "etc") == files and values() == live
whole, transaction = t2 - t0, t2 - t1

rng = random.Random(9)
report = []
for i in range(runs):
    pid = start_apply()
    if i % 4 == 0:
        time.sleep(rng.uniform(0, whole))
    else:
        while not saved() and os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.0002)
        time.sleep(rng.uniform(0, transaction))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    outcome = ("interrupted" if (state / "pending.json").exists() else
               "completed" if (state / "rollback.json").exists() else "before the state")
    killed = os.WIFSIGNALED(status)
    changed = snapshot(root / "etc") != files or values() != live
    rc = main(["rollback", "--root", str(root)]) if outcome != "before the state" else None
    report.append({"outcome": outcome, "killed": killed, "changed": changed, "rollback": rc,
                   "files": snapshot(root / "etc") == files, "values": values() == live,
                   "temps": [k for k in snapshot(root / "etc") if k.endswith(".tmp")]})
print(json.dumps({"whole": whole, "transaction": transaction, "runs": report}))
"""


def test_apply_killed_at_any_moment_is_undone_byte_for_byte_by_rollback(ns, tmp_path):
    root = tmp_path / "root"
    host_tree(root)
    sh("sh", "-c", f"echo 45 > /proc/sys/{UDP.replace('.', '/')}", ns=ns)
    before = netfilter_values(ns)
    driver = tmp_path / "kill_loop.py"
    driver.write_text(KILL_LOOP)
    proc = sh("env", f"PYTHONPATH={ROOT}:{ROOT / 'tests'}", sys.executable, str(driver),
              str(root), "30", ns=ns, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    runs = result["runs"]
    assert len(runs) == 30
    for i, run in enumerate(runs):
        where = (i, run)
        if run["outcome"] == "before the state":
            assert not run["changed"], where  # nothing saved: nothing may have changed
        else:
            assert run["rollback"] == 0, where
        assert run["files"] and run["values"], where
        assert run["temps"] == [], where
    outcomes = {o: sum(r["outcome"] == o for r in runs) for o in
                ("before the state", "interrupted", "completed")}
    print(f"kill -9 over 30 applies: {outcomes}, killed "
          f"{sum(r['killed'] for r in runs)}; apply {result['whole']:.3f} s, transaction "
          f"{result['transaction'] * 1000:.1f} ms")
    # the loop reached inside the transaction, not only before or after it
    assert outcomes["interrupted"] >= 3, outcomes
    assert netfilter_values(ns) == before
