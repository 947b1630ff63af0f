"""Every file in tests/rule_cases/ is one case: facts in, findings out (sqlfluff-style)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import materialize
from flowgen import summary as flow_summary

from ct_tune import engine, facts, profiles, ruleset, sockets, writers

CASES = sorted((Path(__file__).parent / "rule_cases").glob("*.toml"))


def _under(top: Path, rel: str) -> Path:
    """top/rel for a case's [files]/[links] path, which must stay inside the tree."""
    path = top / rel
    assert not Path(rel).is_absolute() and path.resolve().is_relative_to(top.resolve()), rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def load_case_facts(case: dict, tmp: Path) -> dict:
    roots = materialize(case["tree"], tmp)
    top = roots.procfs.parent  # the tree's config root: its etc/, usr/lib/, ...
    for rel, text in case.get("files", {}).items():
        _under(top, rel).write_text(text)
    for rel, target in case.get("links", {}).items():
        _under(top, rel).symlink_to(target)
    data = facts.collect(roots)
    data["writers"] = writers.collect(roots)
    for key, value in case.get("sysctl", {}).items():
        data["sysctl"].setdefault(key, {"writable": True})["value"] = value
    data["host"].update(case.get("host", {}))
    data["conntrack"].update(case.get("conntrack", {}))
    if case.get("counters"):
        assert data["stat"] is not None, "counters need a tree with /proc/net/stat"
        data["stat"]["counters"].update(case["counters"])
    if case.get("flows"):
        data["flows"] = flow_summary(case["flows"], data)
        # read with the sample, as cli.gather does: the tree's proc/net/tcp{,6} if any
        found = facts.Problems()
        data["sockets"] = sockets.collect(roots, found)
        data["errors"] = [*data.get("errors", []), *found.items]
    if "sockets" in case:
        data["sockets"] = {"close_wait": 0, "fin_wait2": 0, "sources": ["/proc/net/tcp"],
                           **case["sockets"]}
    return data


def _at(evidence: dict, dotted: str):
    """evidence["whatif.idle_beyond"] -> evidence["whatif"]["idle_beyond"]."""
    value = evidence
    for part in dotted.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_rule_case(path: Path, tmp_path: Path):
    case = tomllib.loads(path.read_text())
    profile = profiles.get(profiles.load(), case.get("profile", "default"))
    found = {f.rule: f for f in engine.evaluate(ruleset.load(), load_case_facts(case, tmp_path),
                                                profile)}
    for rule_id, want in case.get("expect", {}).items():
        assert rule_id in found, f"{path.name}: no finding from {rule_id}"
        got = found[rule_id]
        if "severity" in want:
            assert got.severity == want["severity"], got.summary
        if "recommended" in want:
            assert got.recommended == want["recommended"], got.explanation
        for name, value in want.get("evidence", {}).items():
            assert _at(got.evidence, name) == value, f"evidence {name}: {got.evidence}"
        for name in want.get("evidence_none", []):
            assert got.evidence[name] is None, f"evidence {name}: {got.evidence[name]}"
        for name, value in want.get("approx", {}).items():
            assert _at(got.evidence, name) == pytest.approx(value, rel=0.02), (
                f"evidence {name}: {got.evidence}")
        if "scope" in want:
            assert got.scope == want["scope"], got.summary
        if "summary_excludes" in want:
            assert want["summary_excludes"] not in got.summary, got.summary
        if "summary_contains" in want:
            assert want["summary_contains"] in got.summary
        if "explanation_contains" in want:
            assert want["explanation_contains"] in got.explanation, got.explanation
    for rule_id in case.get("absent", {}).get("rules", []):
        assert rule_id not in found, f"{path.name}: unexpected {rule_id}: {found[rule_id].summary}"


def test_there_are_cases():
    assert len(CASES) >= 5
