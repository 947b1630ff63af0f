"""Property tests: arbitrary procfs contents and arbitrary facts snapshots never make ct-tune
fail with a traceback or an internal error, and a corrupted input is never audited green.

The CLI runs in-process (click's runner, standalone_mode=False) so hundreds of examples
take seconds; an exception that is not a CtTuneError or a click usage error is exactly
what main() would print as "internal error".
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import HOSTS, materialize
from flowgen import summary as flow_summary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ct_tune import facts, sampler
from ct_tune.cli import cli
from ct_tune.errors import CtTuneError
from ct_tune.sysctlkeys import spec

NF = "proc/sys/net/netfilter"
#: files ct-tune reads whose every value is checked: a corrupt one must never audit green
CHECKED = sorted(
    [f"{NF}/{p.name}" for p in (HOSTS / "defaults-16g" / NF).iterdir()
     if p.is_file() and spec(p.name) is not None]
    + ["proc/net/stat/nf_conntrack", "proc/meminfo", "proc/uptime",
       "sys/devices/system/cpu/online"])
#: every other file of the tree (free text: any content is a possible value)
OTHER = sorted(str(p.relative_to(HOSTS / "defaults-16g")) for p in
               (HOSTS / "defaults-16g").rglob("*") if p.is_file()
               and str(p.relative_to(HOSTS / "defaults-16g")) not in CHECKED
               and p.name != "MODES")


def invoke(args: list[str]) -> tuple[int, str]:
    """Run ct-tune in-process; (exit status, stderr).  Fails on an internal error."""
    result = CliRunner().invoke(cli, args, standalone_mode=False, catch_exceptions=True)
    exc = result.exception
    if exc is None or isinstance(exc, SystemExit):
        return result.exit_code or 0, result.stderr
    if isinstance(exc, CtTuneError):  # main(): "ct-tune: LINE" per line, exit e.exit_code
        return exc.exit_code, "".join(f"ct-tune: {line}\n" for line in str(exc).split("\n"))
    if isinstance(exc, click.ClickException):
        return 3, exc.format_message()
    raise AssertionError(f"internal error: {type(exc).__name__}: {exc}") from exc


#: contents no reader of a CHECKED file may take for a value
corrupt = st.one_of(
    st.binary(max_size=40).map(lambda b: b"\xff" + b),             # not UTF-8
    st.text(max_size=40).map(lambda t: ("zz 0xq\n" + t).encode()),  # a word first
    st.integers(1, 10**30).map(lambda n: f"-{n}\n".encode()),       # negative
    st.integers(21, 6000).map(lambda n: ("1" + "0" * n + "\n").encode()),  # huge
)
anything = st.one_of(corrupt, st.binary(max_size=60), st.text(max_size=60).map(str.encode),
                     st.integers(-(2**70), 2**70).map(lambda n: f"{n}\n".encode()))


@pytest.fixture(scope="module")
def host_tree(tmp_path_factory):
    roots = materialize("defaults-16g", tmp_path_factory.mktemp("props"))
    top = roots.procfs.parent
    saved = {rel: (top / rel).read_bytes() for rel in CHECKED + OTHER}
    return roots, top, saved


def _restore(top: Path, saved: dict[str, bytes], touched: list[str]) -> None:
    for rel in touched:
        (top / rel).write_bytes(saved[rel])


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(bad=st.dictionaries(st.sampled_from(CHECKED), corrupt, min_size=1, max_size=4),
       other=st.dictionaries(st.sampled_from(OTHER + CHECKED), st.one_of(anything,
                                                                         st.none()),
                             max_size=3))
def test_corrupt_procfs_never_tracebacks_and_never_audits_green(host_tree, bad, other):
    roots, top, saved = host_tree
    touched = sorted(set(bad) | set(other))
    try:
        for rel, content in other.items():
            if content is None:
                (top / rel).unlink()
            else:
                (top / rel).write_bytes(content)
        for rel, content in bad.items():  # the checked files' corruption wins
            (top / rel).write_bytes(content)
        rc, err = invoke(["audit", "--procfs", str(roots.procfs), "--sysfs", str(roots.sysfs)])
        assert rc != 0, f"audited green with {sorted(bad)} corrupt"
        assert rc in (1, 2, 3)
        if "not a procfs" not in err:  # meminfo deleted: the tree is refused as a whole
            for rel in bad:
                assert f"ct-tune: {top / rel}: " in err, (rel, err)
    finally:
        _restore(top, saved, touched)


# -- facts snapshots -----------------------------------------------------------------------

HUGE = "@@huge@@"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=12) | st.just(HUGE),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=8)


@pytest.fixture(scope="module")
def base_facts(tmp_path_factory):
    """A full snapshot: every section, a table sample and a polling window included."""
    roots = materialize("nearly-full-drops", tmp_path_factory.mktemp("facts"))
    data = facts.collect(roots)
    data["flows"] = flow_summary([
        {"class": "tcp/ESTABLISHED", "count": 50, "dport": 443, "idle": [0, 600]},
        {"class": "udp/unreplied", "count": 20, "dport": 53, "idle": [0, 20]}], data)
    data["window"] = sampler.window_summary([10, 20], {"drop": 1}, {"drop": 5}, 2.0)
    shutil.rmtree(roots.procfs.parent)
    return json.loads(json.dumps(data))


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw, base):
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["drop", "replace", "replace"]))
        if action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return data


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_facts_never_traceback(base_facts, tmp_path_factory, data):
    doc = data.draw(mutated(base_facts))
    text = json.dumps(doc).replace(f'"{HUGE}"', "9" * 5000)
    path = tmp_path_factory.getbasetemp() / "mutated.json"
    path.write_text(text)
    rc, err = invoke(["audit", "--facts", str(path)])
    assert rc in (0, 1, 2, 3)
    assert "internal error" not in err
    if rc == 3 and err.startswith(f"ct-tune: {path}: "):
        # a rejected snapshot names the file, and each line is one problem
        assert all(line.startswith("ct-tune: ") for line in err.splitlines()), err
