"""Rule files: their format, validation, and the registry built from the search path.

One rule per TOML file.  A rule names the sysctl it tunes (if any), when it
applies, the named values it derives (``[let]``), how it computes the
recommended value, an ordered list of severity cases, an explanation template,
the values it shows as evidence, and its sources.  Every expression is
compiled when the file is loaded, so a typo fails at ``rules list`` time with
the file and rule id, not halfway through an audit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ct_tune import datafiles
from ct_tune.errors import InputError, InputErrors, flatten, raise_all
from ct_tune.expr import Expr, ExprError, Text
from ct_tune.sysctlkeys import WRITABLE_KEY, short_name

SEVERITIES = ("ok", "info", "warning", "critical")
ID_RE = re.compile(r"[a-z][a-z0-9-]*[a-z0-9]")
ID_MAX = 64
#: A rule that recommends a value tunes a key ct-tune may write (sysctlkeys.WRITABLE_KEY);
#: one that only reports may name any key the facts hold (net.netfilter.*, keepalive).
READ_KEY = re.compile(r"^(net\.netfilter\.[a-z0-9_]+|net\.nf_conntrack_max|"
                      r"net\.ipv4\.tcp_keepalive_(time|intvl|probes))$")
NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")

_KEYS = {"id", "title", "parameter", "needs", "when", "let", "recommended", "outcome",
         "severity", "explanation", "evidence", "sources"}
_CASE_KEYS = {"level", "if", "summary"}
#: Names a rule's [let] may not shadow: they are the context every rule reads.
RESERVED = {"sysctl", "writable", "readonly", "host", "conntrack", "counters", "stat", "profile",
            "planned", "current", "recommended", "parameter", "rule", "severity",
            "flows", "window", "persist", "sockets"}


@dataclass(frozen=True)
class Case:
    level: str
    condition: Expr
    summary: Text


@dataclass(frozen=True)
class Rule:
    """One validated, compiled rule."""

    id: str
    title: str
    parameter: str | None
    needs: tuple[str, ...]
    when: Expr
    lets: tuple[tuple[str, Expr], ...]
    recommended: Expr | None
    #: names computed once ``recommended`` is known (e.g. the what-if of that value)
    outcomes: tuple[tuple[str, Expr], ...]
    cases: tuple[Case, ...]
    explanation: Text
    evidence: tuple[str, ...]
    sources: tuple[str, ...]
    path: str

    @property
    def short_parameter(self) -> str | None:
        """The parameter as rules name it (net.netfilter.nf_conntrack_max -> nf_conntrack_max)."""
        return short_name(self.parameter) if self.parameter else None

    @property
    def max_level(self) -> str:
        return max((c.level for c in self.cases), key=SEVERITIES.index, default="ok")


def _need(cond: bool, path: Path, rid: str | None, problem: str) -> None:
    if not cond:
        raise InputError(str(path), problem, item=rid or "(no id)")


def _str_list(data: dict, key: str, path: Path, rid: str) -> tuple[str, ...]:
    value = data.get(key, [])
    _need(isinstance(value, list) and all(isinstance(v, str) for v in value), path, rid,
          f"'{key}' must be a list of strings")
    return tuple(value)


def _names(data: dict, table: str, path: Path, rid: str, taken: set[str]) -> dict[str, Any]:
    """A [let]/[outcome] table: identifiers, not reserved, not defined twice."""
    raw = data.get(table, {})
    _need(isinstance(raw, dict), path, rid, f"'{table}' must be a table of name = expression")
    for name, src in raw.items():
        _need(bool(NAME_RE.fullmatch(name)) and name not in RESERVED and name not in taken,
              path, rid, f"'{table}.{name}': not a usable name (reserved, taken or not an "
              "identifier)")
        _need(isinstance(src, str), path, rid, f"'{table}.{name}' must be an expression string")
    return raw


def parse_rule(data: dict[str, Any], path: Path) -> Rule:
    """Validate one decoded rule file and compile its expressions."""
    rid = data.get("id")
    _need(isinstance(rid, str) and len(rid) <= ID_MAX and bool(ID_RE.fullmatch(rid)), path,
          None, "'id' is required: lowercase letters, digits and dashes (at most "
          f"{ID_MAX}), e.g. 'conntrack-max'")
    problem = datafiles.number_problem(data)
    _need(problem is None, path, rid, problem or "")
    unknown = sorted(set(data) - _KEYS)
    _need(not unknown, path, rid, f"unknown key(s): {', '.join(unknown)}")
    title = data.get("title")
    _need(isinstance(title, str) and title.strip() != "", path, rid, "'title' is required")
    param = data.get("parameter")
    rec_src = data.get("recommended")
    _need(param is None or (isinstance(param, str) and bool(READ_KEY.fullmatch(param))), path,
          rid, "'parameter' must be a conntrack sysctl key such as "
          "'net.netfilter.nf_conntrack_max'")
    _need(param is None or rec_src is None or bool(WRITABLE_KEY.fullmatch(param)), path, rid,
          f"'parameter' {param!r} is not a key ct-tune may write, so 'recommended' cannot "
          "set it (net.netfilter.nf_conntrack_* and net.nf_conntrack_max only)")
    when_src = data.get("when", "true")
    _need(isinstance(when_src, str), path, rid, "'when' must be an expression string")
    sources = _str_list(data, "sources", path, rid)
    _need(len(sources) > 0, path, rid, "'sources' must cite at least one source")
    explanation = data.get("explanation")
    _need(isinstance(explanation, str) and explanation.strip() != "", path, rid,
          "'explanation' is required")
    lets_raw = _names(data, "let", path, rid, taken=set())
    outcomes_raw = _names(data, "outcome", path, rid, taken=set(lets_raw))
    cases_raw = data.get("severity")
    _need(isinstance(cases_raw, list) and len(cases_raw) > 0, path, rid,
          "'severity' needs at least one [[severity]] case")
    evidence = _str_list(data, "evidence", path, rid)
    for name in evidence:
        _need(name in lets_raw or name in outcomes_raw or name in ("current", "recommended"),
              path, rid, f"evidence '{name}' is not a [let] or [outcome] name")

    try:
        when = Expr(when_src)
        lets = tuple((name, Expr(src)) for name, src in lets_raw.items())
        # an empty one would silently mean "no recommendation": the rule could never warn
        _need(rec_src is None or (isinstance(rec_src, str) and rec_src.strip() != ""), path,
              rid, "'recommended' must be a non-empty expression string")
        _need(rec_src is None or param is not None, path, rid,
              "'recommended' needs a 'parameter' to recommend a value for")
        recommended = Expr(rec_src) if rec_src else None
        outcomes = tuple((name, Expr(src)) for name, src in outcomes_raw.items())
        cases = []
        for n, case in enumerate(cases_raw, 1):
            _need(isinstance(case, dict), path, rid, f"severity case {n} must be a table")
            bad = sorted(set(case) - _CASE_KEYS)
            _need(not bad, path, rid, f"severity case {n}: unknown key(s) {', '.join(bad)}")
            level = case.get("level")
            _need(level in SEVERITIES, path, rid,
                  f"severity case {n}: 'level' must be one of {', '.join(SEVERITIES)}")
            summary = case.get("summary")
            _need(isinstance(summary, str) and summary.strip() != "", path, rid,
                  f"severity case {n}: 'summary' is required")
            cond = case.get("if", "true")
            _need(isinstance(cond, str), path, rid,
                  f"severity case {n}: 'if' must be an expression string")
            cases.append(Case(level, Expr(cond), Text(summary)))
        text = Text(explanation)
    except ExprError as e:
        raise InputError(str(path), str(e), item=rid) from None
    return Rule(
        id=rid, title=title.strip(), parameter=param,
        needs=_str_list(data, "needs", path, rid), when=when, lets=lets,
        recommended=recommended, outcomes=outcomes, cases=tuple(cases), explanation=text,
        evidence=evidence,
        sources=sources, path=str(path),
    )


def load_file(path: Path) -> Rule:
    return parse_rule(datafiles.read_toml(path), path)


def load(extra_dirs: Sequence[str | Path] = (), builtin: bool = True,
         site: Path | None = datafiles.SITE_RULES_DIR) -> list[Rule]:
    """The registry: every rule on the search path, a later id replacing an earlier one,
    in dependency order (a rule comes after the rules it ``needs``).

    Every bad file is reported, not only the first (InputErrors); two files of one
    directory with the same id are an error naming both, since neither can be meant
    to replace the other."""
    by_id: dict[str, Rule] = {}
    errors: list[InputError] = []
    for directory in datafiles.search_path(extra_dirs, builtin, site):
        here: dict[str, Path] = {}
        for path in datafiles.toml_files(directory):
            try:
                rule = load_file(path)
            except (InputError, InputErrors) as e:
                errors.extend(flatten(e))
                continue
            if rule.id in here:
                errors.append(InputError(str(path), f"duplicate rule id: {here[rule.id]} "
                                         "in the same directory has it too", item=rule.id))
                continue
            here[rule.id] = path
            by_id.pop(rule.id, None)
            by_id[rule.id] = rule
    raise_all(errors)
    return order(list(by_id.values()))


def order(rules: list[Rule]) -> list[Rule]:
    """Topological order by ``needs`` (missing dependencies are allowed: a user may
    disable a built-in rule); a cycle is a rule error."""
    by_id = {r.id: r for r in rules}
    done: dict[str, Rule] = {}
    visiting: set[str] = set()

    def visit(rule: Rule) -> None:
        if rule.id in done:
            return
        if rule.id in visiting:
            raise InputError(rule.path, "'needs' forms a cycle", item=rule.id)
        visiting.add(rule.id)
        for dep in rule.needs:
            if dep in by_id:
                visit(by_id[dep])
        visiting.discard(rule.id)
        done[rule.id] = rule

    for rule in sorted(rules, key=lambda r: r.id):
        visit(rule)
    return list(done.values())
