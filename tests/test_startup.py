"""What `collect` and `audit` import.  On a small table start-up is most of collect's time
(issue 11's speed target compares collect with `cat /proc/net/nf_conntrack`), so what only
other commands need stays out of it.  The time itself is benchmarks/startup.py's to
measure; these tests keep the set of modules from growing back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import flowgen
from conftest import ROOT, tree_args

from ct_tune import snapshot

#: runs ct-tune as `python -m ct_tune` does, then writes the names of the loaded modules
RUN = """
import runpy, sys
out = sys.argv[1]
sys.argv = ["ct-tune", *sys.argv[2:]]
try:
    runpy.run_module("ct_tune", run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
with open(out, "w") as f:
    f.write("\\n".join(sorted(sys.modules)))
sys.exit(code)
"""


def imported(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    listing = tmp_path / "modules.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", RUN, str(listing), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, set(listing.read_text().split())


def test_collect_imports_neither_the_rule_engine_nor_what_only_writers_need(tree, tmp_path):
    roots = tree("defaults-16g")
    flowgen.write_dump(roots, [{"class": "udp/unreplied", "count": 50, "dport": 53}])
    out = tmp_path / "host.json"
    code, modules = imported(tmp_path, "collect", *tree_args(roots), "-o", str(out))
    assert code == 0
    facts = snapshot.load(out)
    assert facts["host"]["kernel_release"] and facts["flows"]["entries_read"] == 50
    # jinja2 and tabulate are the engine's and the listings'; secrets (hashlib, random)
    # named temporary files; dataclasses built value types that NamedTuples now are;
    # findings is needed only to print input problems, and this tree has none; shutil
    # only looked dd(1) up on PATH, which starting it does
    unwanted = {"jinja2", "tabulate", "secrets", "dataclasses", "ct_tune.engine",
                "ct_tune.ruleset", "ct_tune.findings", "shutil"}
    assert modules & unwanted == set()


def test_audit_without_sample_leaves_out_zipfile_and_difflib(tree, tmp_path):
    roots = tree("defaults-16g")
    code, modules = imported(tmp_path, "audit", *tree_args(roots), "--no-sample",
                             "--format", "json")
    assert 0 <= code <= 2
    # importlib.resources (and its zipfile) only named the rules folder; difflib is for
    # the "did you mean" of an unknown configured key, and this tree has none
    unwanted = {"importlib.resources", "zipfile", "difflib", "secrets", "tabulate"}
    assert modules & unwanted == set()
