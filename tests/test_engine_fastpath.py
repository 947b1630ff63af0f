"""The engine's shortcuts give exactly what the plain path gives.

The fleet report runs every rule on thousands of hosts, so the engine evaluates a rule's
expressions in one expr.Scope (globals merged and the Jinja2 context built once per rule)
instead of copying the variables for every expression.  These tests run the same facts
both ways and compare every finding field, explanations included.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rule_cases import CASES, load_case_facts

from ct_tune import engine, expr, profiles, ruleset, snapshot
from ct_tune.expr import MAX_SIZE, Expr, ExprError, NoneDict, Scope, Text


def _findings(rules, facts, profile, explain=True):
    try:
        found = engine.evaluate(rules, facts, profile, explain=explain)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return [dataclasses.asdict(f) for f in found]


@pytest.mark.parametrize("case_file", CASES[::3], ids=lambda p: p.stem)
def test_scope_gives_the_findings_of_plain_evaluation(case_file, tmp_path, monkeypatch):
    case = tomllib.loads(case_file.read_text())
    facts = load_case_facts(case, tmp_path)
    rules = ruleset.load(site=None)
    every = profiles.load(site=None)
    for name in sorted(every):
        fast = _findings(rules, facts, every[name])
        with monkeypatch.context() as m:
            m.setattr(engine, "Scope", dict)  # a plain dict: expr evaluates it as before
            m.setattr(expr, "_DIRECT", {})  # every helper call through Jinja2's checks
            m.setattr(expr, "_MEMOIZED", frozenset())  # and computed every time
            plain = _findings(rules, facts, every[name])
        assert fast == plain, name


@pytest.mark.parametrize("source", [
    "a + b", "result", "result is defined", "maximum(a, b) * 2", "a ~ 'x'",
    "undefined_name + 1", "ceil", "[a, b] | sum", "a.missing", "1 / (a - a)",
])
def test_expression_in_a_scope_equals_expression_on_the_mapping(source):
    """Same value or same error, also for names that shadow a helper (a let called
    `ceil`) and for `result`, which the previous expression in the scope assigned."""
    ctx = {"a": 3, "b": 4, "ceil": 7}
    scope = Scope(ctx)
    Expr("a * 100")(scope)  # leaves its result in the scope's Jinja2 context

    def run(target):
        try:
            value = Expr(source)(target)
        except ExprError as e:
            return "error", str(e)
        return "value", value

    assert run(scope) == run(ctx)


def test_scope_sees_variables_set_after_it_was_made():
    scope = Scope({"a": 1})
    scope["b"] = 41
    assert Expr("a + b")(scope) == 42


def _weigh_before(value, cap=MAX_SIZE):
    """expr._weigh as it was before its fast paths for the exact built-in types."""
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, bool) or v is None:
            total += 1
        elif isinstance(v, int):
            total += 1 + v.bit_length() // 3
        elif isinstance(v, (list, tuple, set, frozenset, dict, range)):
            total += 1 + len(v)
            if total <= cap:
                stack.extend(v.items() if isinstance(v, dict) else v)
        else:
            total += 8
        if total > cap:
            return total
    return total


_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
           | st.binary(max_size=10) | st.builds(NoneDict, st.dictionaries(st.text(max_size=3),
                                                                       st.integers(),
                                                                       max_size=3)))
_VALUES = st.recursive(_LEAVES, lambda kids: st.lists(kids, max_size=6)
                       | st.tuples(kids, kids) | st.frozensets(st.integers(), max_size=4)
                       | st.dictionaries(st.text(max_size=4) | st.integers(), kids, max_size=5),
                       max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(_VALUES, st.sampled_from([0, 1, 5, 20, 100, MAX_SIZE]))
def test_weigh_counts_as_before(value, cap):
    """The sandbox's size bound and work budget see the same count: exact up to the cap,
    above it both ways when past it."""
    before, now = _weigh_before(value, cap), expr._weigh(value, cap)
    assert now == before if before <= cap else now > cap


def _missing_before(inputs, unknown):
    """engine._missing before its shortcut for inputs no unknown fact is under."""
    why = []
    for root, key in sorted(inputs, key=lambda r: (r[0], r[1] or "")):
        if key is None:
            hits = [w for (r, _), ws in unknown.items() if r == root or root == "*" for w in ws]
        else:
            hits = unknown.get((root, key), []) + unknown.get((root, None), [])
        why += [w for w in hits if w not in why]
    return why


@pytest.mark.parametrize("case_file", [c for c in CASES if "unknown" in c.read_text()][:12],
                         ids=lambda p: p.stem)
def test_missing_inputs_as_before(case_file, tmp_path):
    """Each rule's missing inputs, on facts with unknowns, and its inputs as computed
    afresh (rule_inputs keeps them per rule object)."""
    facts = load_case_facts(tomllib.loads(case_file.read_text()), tmp_path)
    base = engine.build_context(facts, profiles.get(profiles.load(site=None), "default"))
    unknown = engine.unavailable(facts, base)
    unknown.setdefault(("planned", "nf_conntrack_max"), []).append("planned unknown")
    unknown.setdefault(("*", None), [])
    for rule in ruleset.load(site=None):
        inputs = engine.rule_inputs(rule)
        assert inputs == engine._rule_inputs(rule) and engine.rule_inputs(rule) is inputs
        for table in (unknown, {k: v for k, v in unknown.items() if k[0] != "*"}):
            assert engine._missing(inputs, table) == _missing_before(inputs, table), rule.id


@pytest.mark.parametrize("source", [
    "{% for x in [3, 1, 2] %}{{ maximum(x, 2) }}{{ ceil(x / 2) }} {% endfor %}",
    "{{ minimum([]) }}", "{{ maximum(1, 2, key=none) }}", "{{ usage(5, 10)|pct }}",
])
def test_helpers_called_directly_as_through_jinja(source, monkeypatch):
    """The registered helpers skip Jinja2's per-call checks: the same text or error,
    in a loop (whose calls carry Jinja2's _loop_vars) too."""
    def run():
        try:
            return Text(source).render({})
        except ExprError as e:
            return f"error: {e}"

    direct = run()
    monkeypatch.setattr(expr, "_DIRECT", {})
    assert direct == run()
    assert len(expr._direct_helpers()) == sum(callable(f) for f in expr.HELPERS.values())


# snapshot._check before its reordering, for the comparison below
def _check_before(value, spec, where, out):
    """Append (field path, problem) for everything wrong in value, not just the first."""
    def fail(problem: str) -> None:
        out.append((where, problem))

    kind = spec[0] if isinstance(spec, tuple) and spec and isinstance(spec[0], str) else None
    if kind == "optional":
        _check_before(value, spec[1], where, out)
    elif kind == "nullable":
        sub = spec[1]
        if value is None:
            return
        not_int = isinstance(value, bool) or not isinstance(value, int)
        if isinstance(sub, tuple) and sub[0] == "int" and not_int:
            fail(f"expected integer or null, found {snapshot._show(value)}")
        else:
            _check_before(value, sub, where, out)
    elif kind == "mapping":
        if not isinstance(value, dict):
            fail(f"expected an object, found {snapshot._show(value)}")
            return
        for key, item in value.items():
            if spec[2] is not None and not spec[2].fullmatch(key):
                out.append((f"{where}.{key}" if where else key, "not a valid key here"))
                continue
            _check_before(item, spec[1], f"{where}.{key}", out)
    elif kind == "list":
        if not isinstance(value, list):
            fail(f"expected a list, found {snapshot._show(value)}")
            return
        if len(value) > spec[2]:
            fail(f"more than {spec[2]} items")
            return
        for n, item in enumerate(value):
            _check_before(item, spec[1], f"{where}[{n}]", out)
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"expected integer, found {snapshot._show(value)}")
        elif not spec[1] <= value <= spec[2]:
            fail(f"{value} is outside {spec[1]}..{spec[2]}")
    elif kind == "sysctl-value":
        snapshot._check_sysctl_value(value, where, out)
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            fail(f"expected an object, found {snapshot._show(value)}")
            return
        for key, sub in spec.items():
            if key not in value and isinstance(sub, tuple) and sub and sub[0] == "optional":
                continue
            if key not in value:
                fail(f"missing field {key!r}")
                continue
            _check_before(value[key], sub, f"{where}.{key}" if where else key, out)
    else:
        # bool is an int subclass in Python: only accept it where booleans are meant.
        ok = isinstance(value, spec) and not (isinstance(value, bool) and bool not in spec)
        if not ok:
            fail(f"expected {snapshot._describe(spec)}, found {snapshot._show(value)}")
        elif isinstance(value, float) and not math.isfinite(value):
            fail(f"expected a finite number, found {value}")
        elif isinstance(value, int) and not isinstance(value, bool) \
                and abs(value) > snapshot.INT_LIMIT:
            fail(f"{value} is beyond 64 bits")


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """Snapshots (facts as collected) of a few captured hosts, with their table sample."""
    out = []
    for case_file in CASES[:40:8]:
        data = load_case_facts(tomllib.loads(case_file.read_text()),
                               tmp_path_factory.mktemp("case"))
        out.append(json.loads(json.dumps({**data, "schema": snapshot.SCHEMA_NAME,
                                          "schema_version": snapshot.SCHEMA_VERSION})))
    return out


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            yield from _paths(v, (*path, n))


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
                     | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=8)


#: one of each kind a spec tells apart
_ODD = [None, True, False, 0, -1, 2**64, 1.5, math.inf, math.nan, "x", "", [], {}, [1], ["x"],
        {"a": 1}, {"1": "x"}]


@settings(max_examples=1000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_snapshot_check_reports_as_before(snapshots, data):
    """The same problems, in the same order, for snapshots with one field replaced (or
    removed) by anything JSON can hold."""
    doc = copy.deepcopy(data.draw(st.sampled_from(snapshots)))
    path = data.draw(st.sampled_from(sorted((p for p in _paths(doc) if p), key=repr)))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(st.sampled_from(_ODD) | _JSON)
    now, before = [], []
    snapshot._check(doc, snapshot.SPEC, "", now)
    _check_before(doc, snapshot.SPEC, "", before)
    assert now == before


def test_snapshot_check_accepts_the_snapshots(snapshots):
    for doc in snapshots:
        found = []
        snapshot._check(doc, snapshot.SPEC, "", found)
        assert found == []


def test_helper_memo_computes_once_per_host_and_only_for_unchanged_arguments():
    writers, profile, host = {"kube_proxy": {"running": True}}, {}, NoneDict({"kernel": "6.1"})
    other_host = NoneDict({"kernel": "6.1"})
    twice = "[kube_proxy(w, p, h), kube_proxy(w, p, h)]"
    with expr.HelperMemo([writers, profile, host]) as memo:
        first, second = Expr(twice)({"w": writers, "p": profile, "h": host})
        assert first is second and first is not None and len(memo.results) == 1
        # an argument that is not among the stable objects (planned, a copy): not kept
        Expr("kube_proxy(w, p, h)")({"w": writers, "p": profile, "h": other_host})
        assert len(memo.results) == 1
    assert expr.HelperMemo.active is None
    outside = Expr(twice)({"w": writers, "p": profile, "h": host})
    assert outside[0] == first and outside[0] is not outside[1]
