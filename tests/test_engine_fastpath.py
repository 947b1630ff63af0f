"""The engine's shortcuts give exactly what the plain path gives.

The fleet report runs every rule on thousands of hosts, so the engine evaluates a rule's
expressions in one expr.Scope (globals merged and the Jinja2 context built once per rule)
instead of copying the variables for every expression.  These tests run the same facts
both ways and compare every finding field, explanations included.
"""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
from test_rule_cases import CASES, load_case_facts

from ct_tune import engine, profiles, ruleset
from ct_tune.expr import Expr, ExprError, Scope


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
