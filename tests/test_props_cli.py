"""Hostile input through the real CLI: never an internal error, a hang, a write outside the
root, a foreign line in a fragment, OK for an input that is broken, or memory that grows
with a table dump.

benchmarks/fuzz.py generates the inputs (procfs trees, facts snapshots, rule, profile and
rollback-state files, scratch roots with symlinks planted in them) from seeds and runs
audit, audit --format sysctl, apply --dry-run, apply --no-live into a scratch root and
rollback on each, every command in a forked child under a timeout.  Here it runs a fixed
handful of examples per category, chosen to cover each kind of input it breaks, in two
processes side by side; the benchmark runs as many as asked for the closing figures.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

FUZZ = ROOT / "benchmarks" / "fuzz.py"
SEED = 1
TIMEOUT = 5  # seconds per command; an audit of a captured tree takes about 0.2 s
# (category, example indices for seed 1): each set covers its category's kinds of damage
PICKS = [
    {"procfs": [0, 2, 25, 29], "facts": [14, 23, 26, 41], "state": [0, 2, 6, 16]},
    {"rules": [8, 10, 36, 43], "profiles": [0, 7, 9], "roots": [0, 20],
     # made-up protocols+zones (3, 4: 266 and 513 MiB before flows bounded its classes),
     # states+addresses (0, 5: audit took over 30 s then)
     "table": [0, 3, 4, 5]},
]
CHECKS = ("internal", "hang", "outside", "injected", "false_green", "memory")


@pytest.fixture(scope="module")
def results() -> dict:
    procs = [subprocess.Popen(
        [sys.executable, str(FUZZ), "--json", "--seed", str(SEED), "--timeout", str(TIMEOUT),
         *(f"--pick={cat}={','.join(map(str, idx))}" for cat, idx in picks.items())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for picks in PICKS]
    out = {}
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        out.update(json.loads(stdout))
    return out


CASES = [pytest.param(cat, check, id=f"{cat}-{check}")
         for picks in PICKS for cat in picks for check in CHECKS]


@pytest.mark.parametrize(("category", "check"), CASES)
def test_hostile_input_never(results, category, check):
    r = results[category]
    assert r["counts"]["examples"] == len(next(p[category] for p in PICKS if category in p))
    failures = [f for f in r["failures"] if f["check"] == check]
    assert r["counts"][check] == 0, "\n".join(
        f"example {f['index']} ({'; '.join(f['input'])}): {' | '.join(f['seen'])}"
        for f in failures)


def test_the_harness_sees_what_it_counts(tmp_path):
    """The checks themselves: a foreign line, a write outside, a false OK are caught."""
    sys.path.insert(0, str(FUZZ.parent))
    try:
        import fuzz
    finally:
        sys.path.remove(str(FUZZ.parent))
    assert fuzz.injected_lines("# c\n\nnet.netfilter.nf_conntrack_max = 5\n") == []
    assert fuzz.injected_lines("net.netfilter.nf_conntrack_max = 5\nkernel.core_pattern = |x\n"
                               ) == ["kernel.core_pattern = |x"]
    assert fuzz.injected_lines("net.netfilter.nf_conntrack_max = 5x\n") == [
        "net.netfilter.nf_conntrack_max = 5x"]
    assert fuzz.injected_lines("options nf_conntrack hashsize=1\nblacklist x\n",
                               "modprobe.d") == ["blacklist x"]
    assert fuzz.diff_injected("+++ b/x\n+# c\n+net.nf_conntrack_max = 1\n+kernel.x = 1\n"
                              ) == ["kernel.x = 1"]
    (tmp_path / "a").write_text("1")
    before = fuzz.fingerprint([tmp_path])
    (tmp_path / "a").write_text("2")
    (tmp_path / "b").symlink_to("/etc")
    assert fuzz.changed(before, fuzz.fingerprint([tmp_path])) == [
        str(tmp_path / "a"), str(tmp_path / "b")]
    run = fuzz.run_cli(["rules", "show", "no-such-rule"], 60)
    assert run.code == 3 and fuzz.internal(run) is None
