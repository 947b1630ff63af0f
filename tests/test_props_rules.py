"""Property tests: rule and profile files made by mutating the shipped ones (any string
replaced by or extended with arbitrary text, line breaks and control characters included;
any value replaced by an arbitrary int or float, nan, inf and 300-bit ones included)
never make `audit` or `audit --format sysctl` raise an internal error or hang, and every
line of the fragment is a ct-tune setting or a comment; a file that cannot be used is
a clean exit 3 naming it.

In-process (click's CliRunner), so hundreds of examples run in seconds.
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import materialize, tree_args
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tomltext import toml_str

from ct_tune import datafiles
from ct_tune.cli import cli
from ct_tune.errors import EXIT_UNKNOWN, CtTuneError

ALLOWED = re.compile(r"(net\.netfilter\.nf_conntrack_[a-z0-9_]+|net\.nf_conntrack_max) = -?\d+")
RULES = [(p.name, tomllib.loads(p.read_text())) for p in
         sorted(datafiles.builtin_dir().glob("*.toml"))]
PROFILES = [(p.name, tomllib.loads(p.read_text())) for p in
            sorted((datafiles.builtin_dir() / "profiles").glob("*.toml"))]

#: text that is more likely than random to reach a fragment or strain the sandbox
NASTY = [
    "\nkernel.core_pattern = |/tmp/x", "\r\nkernel.sysrq = 1", "\u2028kernel.sysrq = 1",
    "\x85net.core.somaxconn = 1", "\x0bkernel.sysrq = 1", "'a'*10**10",
    "range(10**9)|list", "(" * 300 + "1" + ")" * 300, "10**10**10**10", "'%999999999d' % 1",
    "'45\nkernel.sysrq = 1'", "{% for i in range(99999) %}{% for j in range(99999) %}"
    "{% endfor %}{% endfor %}", "{{ 'x' * 2000000 }}", "current ~ '\nkernel.sysrq = 1'",
    "-1", "2147483648", "1e400", "nan", "'60'", "current * 10**90",
]
TEXT = st.one_of(st.text(max_size=30), st.sampled_from(NASTY),
                 st.text(alphabet="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029 =.k0", max_size=12))
NUMBER = st.one_of(st.integers(), st.integers(min_value=-2**300, max_value=2**300),
                   st.sampled_from([0, -1, 2**31, 2**63, -2**63 - 1, 10**30]),
                   st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308]))


def toml_value(v: Any) -> str:
    """TOML for a decoded value, inline (so any structure is one key = value line)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"


def dumps(data: dict[str, Any]) -> str:
    return "".join(f"{toml_value(k)} = {toml_value(v)}\n" for k, v in data.items())


def leaves(data: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in leaves(v, (*path, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in leaves(v, (*path, i))]
    return [path]


def get(data: Any, path: tuple) -> Any:
    for k in path:
        data = data[k]
    return data


def put(data: Any, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        data = data[k]
    data[path[-1]] = value


#: the fields that are plain text (not expressions): changing them keeps the file usable,
#: so the text reaches the fragment's comments
PROSE = {"title", "sources", "summary", "description", "reason", "source"}


@st.composite
def mutated(draw: st.DrawFn, files: list[tuple[str, dict]]) -> tuple[str, dict]:
    """One shipped file with one to three of its values replaced or extended (half of
    the time prose only, so the file still loads and its text reaches the fragment)."""
    name, original = draw(st.sampled_from(files))
    data = copy.deepcopy(original)
    every = leaves(data)
    prose = [p for p in every if any(k in PROSE for k in p if isinstance(k, str))]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(every) if not prose else
                    st.one_of(st.sampled_from(every), st.sampled_from(prose)))
        old = get(data, path)
        if isinstance(old, str):
            new = draw(st.one_of(TEXT, TEXT.map(lambda t, o=old: o + t), NUMBER))
        else:
            new = draw(st.one_of(NUMBER, TEXT))
        put(data, path, new)
    return name, data


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return tree_args(materialize("defaults-16g", tmp_path_factory.mktemp("host")))


def run(args: list[str]) -> tuple[int, str]:
    """One command in this process: its status and stdout, failing the test on anything
    that would be an internal error (an exception other than ct-tune's own)."""
    result = CliRunner().invoke(cli, args)
    exc = result.exception
    if isinstance(exc, CtTuneError):
        for line in str(exc).split("\n"):
            assert len(line.splitlines()) == 1, repr(line)
        return EXIT_UNKNOWN, ""
    assert exc is None or isinstance(exc, SystemExit), "".join(
        __import__("traceback").format_exception(*result.exc_info))
    return result.exit_code, result.stdout


def check(args: list[str]) -> None:
    code, _ = run(["audit", "--no-sample", *args])
    assert code in (0, 1, 2, 3)
    code, out = run(["audit", "--format", "sysctl", "--no-sample", *args])
    assert code in (0, 1, 2, 3)
    for line in out.splitlines():
        if line.strip() and not line.startswith("#"):
            assert ALLOWED.fullmatch(line), f"injected line {line!r}"


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rule=mutated(RULES))
def test_mutated_rule_files_never_crash_or_inject(host, rule):
    name, data = rule
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / name).write_text(dumps(data))
        check(["--no-builtin-rules", "--rules-dir", d, *host])


@settings(max_examples=50, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(prof=mutated(PROFILES))
def test_mutated_profile_files_never_crash_or_inject(host, prof):
    name, data = prof
    profile = data.get("name") if isinstance(data.get("name"), str) else "default"
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "profiles").mkdir()
        (Path(d) / "profiles" / name).write_text(dumps(data))
        check(["--rules-dir", d, "--profile", profile, *host])
