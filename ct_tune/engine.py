"""The rules engine: facts + profile + rules -> findings, with no I/O.

Rules run in dependency order.  Each sees the host's facts, the profile, and
``planned``: every parameter's value as the rules so far recommend it (or its
current value), which is how the buckets and memory rules size themselves from
the *recommended* max rather than the current one, keeping the recommendations
consistent with one another.  A caller that will not act on a recommendation
(apply keeps nf_conntrack_max unless --allow-lower) passes it in ``keep``, so the
rules after it size themselves from the value that stays.

A rule that reads a fact that is missing or was corrupt (facts["errors"], a
sysctl without a value, the counters table of a loaded module) is not run: its
finding is *unknown* and names those inputs, so a host that could not be read
never looks fine.  Which facts a rule reads is found in its expressions' syntax
trees (the names and ``name.key`` / ``name['key']`` lookups they contain).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from jinja2 import Environment, TemplateError, nodes
from jinja2.parser import Parser

from ct_tune.errors import InputError, flatten, raise_all
from ct_tune.expr import ExprError, HelperMemo, NoneDict, Scope
from ct_tune.findings import Finding, error_text
from ct_tune.profiles import Profile
from ct_tune.ruleset import Rule
from ct_tune.sysctlkeys import short_name

HOST_ONLY_NOTE = "read-only in this network namespace: set it on the host"
GLOBAL_NOTE = "one value for every network namespace: set it on the host, not from here"
#: One value for every namespace (nf_conntrack_standalone.c points them at globals).
GLOBAL_KEYS = ("nf_conntrack_max", "nf_conntrack_buckets", "nf_conntrack_expect_max")


def build_context(facts: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """What every rule expression can read (documented in man/ct-tune-rules.5)."""
    sysctl, writable, readonly = NoneDict(), NoneDict(), NoneDict()
    for key, entry in facts["sysctl"].items():
        name = short_name(key)
        # net.nf_conntrack_max mirrors net.netfilter.nf_conntrack_max: the latter wins.
        if name not in sysctl or key.startswith("net.netfilter."):
            sysctl[name] = entry["value"]
            writable[name] = entry["writable"]
            readonly[name] = entry.get("readonly")
    stat = facts.get("stat")
    prof = profile.as_context()
    # Timeouts and floors are optional per key: a missing one reads as none.
    prof["timeouts"] = NoneDict(prof["timeouts"])
    prof["floors"] = NoneDict(prof["floors"])
    return {
        "sysctl": sysctl,
        "writable": writable,
        # why an unwritable key is read-only: kernel, netns, read-only-mount, mode
        "readonly": readonly,
        "host": NoneDict(facts["host"]),
        "conntrack": NoneDict(facts["conntrack"]),
        "stat": stat,
        "counters": NoneDict(stat["counters"]) if stat else NoneDict(),
        "profile": prof,
        # the table sample and the polling window, when collected (None otherwise)
        # (fields added since a snapshot was written read as none)
        "flows": NoneDict(facts["flows"]) if facts.get("flows") is not None else None,
        "window": NoneDict(facts["window"]) if facts.get("window") else None,
        # this namespace's TCP sockets in CLOSE_WAIT / FIN_WAIT2, read with the sample
        # (ct_tune/sockets.py); None when not read (no sample, an older snapshot)
        "sockets": NoneDict(facts["sockets"]) if facts.get("sockets") else None,
        # the boot configuration (sysctl.d, modules-load.d); None for older snapshots
        "persist": facts.get("persist"),
        # other writers of the keys and the boot system (ct_tune.writers); None if unknown
        "writers": facts.get("writers"),
        # the other network namespaces' tables (ct_tune.nsview): None when not scanned
        "namespaces": facts.get("namespaces"),
    }


#: parses rule sources to find what they read; never compiles or runs anything
_PARSER_ENV = Environment()

Ref = tuple[str, str | None]


@functools.lru_cache(maxsize=4096)
def refs(source: str, template: bool = False) -> frozenset[Ref]:
    """The context lookups in an expression (or a template): ``sysctl.x``,
    ``sysctl['x']`` and ``sysctl.get('x'[, default])`` are ("sysctl", "x"); any other use
    of a name (passed whole to a helper, indexed by a computed key, ``.get(name)``,
    ``.items()``) is (name, None), meaning all of it."""
    try:
        tree: nodes.Node = (_PARSER_ENV.parse(source) if template else
                            Parser(_PARSER_ENV, source, state="variable").parse_expression())
    except (TemplateError, RecursionError):
        return frozenset([("*", None)])  # cannot tell: it reads everything
    found: set[Ref] = set()
    todo = [tree]
    while todo:
        node = todo.pop()
        method = _mapping_call(node)
        if method is not None:
            found.add(method)
            todo.extend(c for c in node.iter_child_nodes() if c is not node.node)
        elif isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
            found.add((node.node.name, node.attr))
        elif (isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name)
              and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)):
            found.add((node.node.name, node.arg.value))
        elif isinstance(node, nodes.Name):
            found.add((node.name, None))
        else:
            todo.extend(node.iter_child_nodes())
    return frozenset(found)


#: mapping methods a rule may call on a context name (NoneDict is a dict)
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})


def _mapping_call(node: nodes.Node) -> Ref | None:
    """("x", "k") for ``x.get('k')`` or ``x.get('k', default)``, (x, None) for any other
    mapping method called on a name (it reads all of x); None when node is no such call.
    Without this ``sysctl.get('k')`` would read as a key named "get", which no fact is,
    and a rule reading a corrupt value through it would run as if it were fine."""
    if not (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr)
            and isinstance(node.node.node, nodes.Name) and node.node.attr in _MAPPING_METHODS):
        return None
    name, args = node.node.node.name, node.args
    if (node.node.attr == "get" and 1 <= len(args) <= 2 and not node.kwargs
            and node.dyn_args is None and node.dyn_kwargs is None
            and isinstance(args[0], nodes.Const) and isinstance(args[0].value, str)):
        return (name, args[0].value)
    return (name, None)


def _as_inputs(found: Iterable[Ref], rule: Rule) -> set[Ref]:
    """`current` is the rule's parameter's sysctl."""
    out = set(found)
    if ("current", None) in out and rule.parameter:
        out.discard(("current", None))
        out.add(("sysctl", rule.short_parameter))
    return out


def rule_inputs(rule: Rule) -> frozenset[Ref]:
    """Every context lookup of every expression and text of the rule (worked out once per
    rule object: a fleet report asks for each rule's on every host)."""
    found = _RULE_INPUTS.get(id(rule))
    if found is None or found[0] is not rule:
        if len(_RULE_INPUTS) >= 4096:  # a long-lived process loading many rule sets
            _RULE_INPUTS.clear()
        found = _RULE_INPUTS[id(rule)] = (rule, _rule_inputs(rule))
    return found[1]


#: rule_inputs by id(rule), with the rule itself, which keeps the id from being reused
_RULE_INPUTS: dict[int, tuple[Rule, frozenset[Ref]]] = {}


def _rule_inputs(rule: Rule) -> frozenset[Ref]:
    out: set[Ref] = set(refs(rule.when.source))
    for expr in [e for _, e in rule.lets] + [e for _, e in rule.outcomes]:
        out |= refs(expr.source)
    if rule.recommended is not None:
        out |= refs(rule.recommended.source)
    for case in rule.cases:
        out |= refs(case.condition.source) | refs(case.summary.source, template=True)
    out |= refs(rule.explanation.source, template=True)
    if rule.parameter:
        out.add(("current", None))
    return frozenset(_as_inputs(out, rule))


class _Watched(NoneDict):
    """A context mapping that notes every read of a key the facts could not supply, so
    a rule's ``when`` can be tried: if it says the rule does not apply without reading
    one, the missing input does not matter."""

    def __init__(self, data: Mapping[str, Any], root: str, unknown: Mapping[Ref, Any],
                 seen: set[Ref]) -> None:
        super().__init__(data)
        self._root, self._unknown, self._seen = root, unknown, seen
        self._any = any(r == root for r, _ in unknown)

    def __getitem__(self, key: str) -> Any:
        if (self._root, key) in self._unknown:
            self._seen.add((self._root, key))
        return super().__getitem__(key)

    def _whole(self) -> None:
        if self._any:
            self._seen.add((self._root, None))

    def get(self, key: str, default: Any = None) -> Any:
        if (self._root, key) in self._unknown:
            self._seen.add((self._root, key))
        return super().get(key, default)

    def __iter__(self) -> Any:
        self._whole()
        return super().__iter__()

    def items(self) -> Any:
        self._whole()
        return super().items()

    def values(self) -> Any:
        self._whole()
        return super().values()

    def keys(self) -> Any:
        self._whole()
        return super().keys()


def _applies(rule: Rule, base: dict[str, Any], planned: NoneDict,
             unknown: Mapping[Ref, list[str]]) -> bool | None:
    """Whether the rule applies, decided without any missing input; None: undecidable."""
    when_inputs = _as_inputs(refs(rule.when.source), rule)
    whole = {r for r, k in unknown if k is None}  # stat, counters, persist: not watched
    current = ("sysctl", rule.short_parameter)  # a plain value: not watched either
    if any(r in whole for r, _ in when_inputs) or (current in when_inputs and current in unknown):
        return None
    seen: set[Ref] = set()
    ctx = {**base, "parameter": rule.parameter,
           "current": base["sysctl"][rule.short_parameter] if rule.parameter else None}
    for root in ("sysctl", "writable", "host", "conntrack"):
        ctx[root] = _Watched(base[root], root, unknown, seen)
    ctx["planned"] = _Watched(planned, "planned", unknown, seen)
    try:
        applies = bool(rule.when(ctx))
    except ExprError:
        if seen:
            return None
        raise
    return None if seen else applies


def unavailable(facts: dict[str, Any], base: dict[str, Any]) -> dict[Ref, list[str]]:
    """Facts the rules must not be run on, each with why: the facts the collection's
    errors left unknown, sysctls present without a value, and the counters table when
    nf_conntrack is loaded but the table was not read (no drops is not "no drops")."""
    out: dict[Ref, list[str]] = {}

    def add(ref: Ref, why: str) -> None:
        if why not in out.setdefault(ref, []):
            out[ref].append(why)

    for err in facts.get("errors") or []:
        for fact in err.get("facts") or []:
            root, key = fact[0], (fact[1] if len(fact) > 1 else None)
            if root == "sysctl" and key is not None:
                short = short_name(key)
                if base["sysctl"][short] is None:  # net.nf_conntrack_max may stand in
                    add(("sysctl", short), error_text(err))
                    add(("planned", short), error_text(err))
            elif root == "stat":
                add(("stat", None), error_text(err))
                add(("counters", None), error_text(err))
            else:
                add((root, key), error_text(err))
    for key, entry in facts["sysctl"].items():
        short = short_name(key)
        if entry["value"] is None and base["sysctl"][short] is None and (
                ("sysctl", short) not in out):
            add(("sysctl", short), f"{key}: no value was read")
            add(("planned", short), f"{key}: no value was read")
    if facts["conntrack"]["loaded"] and facts.get("stat") is None and ("stat", None) not in out:
        where = facts.get("source", {}).get("procfs", "/proc").rstrip("/")
        why = f"{where}/net/stat/nf_conntrack: not read (nf_conntrack is loaded)"
        add(("stat", None), why)
        add(("counters", None), why)
    return out


def _missing(inputs: Collection[Ref], unknown: Mapping[Ref, list[str]]) -> list[str]:
    """Why the inputs cannot be used, in a stable order (empty: all of them can)."""
    roots = {r for r, _ in unknown}
    if not any(root in roots or root == "*" for root, _ in inputs):
        return []  # what the loop below finds for inputs that no unknown fact is under
    why: list[str] = []
    for root, key in sorted(inputs, key=lambda r: (r[0], r[1] or "")):
        if key is None:
            hits = [w for (r, _), ws in unknown.items() if r == root or root == "*" for w in ws]
        else:
            hits = unknown.get((root, key), []) + unknown.get((root, None), [])
        why += [w for w in hits if w not in why]
    return why


def _unknown(rule: Rule, base: dict[str, Any], why: list[str]) -> Finding:
    param = rule.short_parameter
    scope = None
    if rule.parameter:
        scope = "here" if base["writable"][param] else "host"
    return Finding(
        rule=rule.id, title=rule.title, severity="unknown", parameter=rule.parameter,
        current=_jsonable(base["sysctl"][param]) if param else None, recommended=None,
        summary="cannot assess: " + "; ".join(why),
        explanation="ct-tune could not assess this: inputs the rule reads are missing or "
                    "corrupt:\n" + "\n".join(f"- {w}" for w in why),
        sources=list(rule.sources), rule_file=rule.path, scope=scope, unavailable=why,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isinf(value) or math.isnan(value) else round(value, 6)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class _Attempts:
    """The expression errors of one rule run, and the names they left without a value.

    A rule is run to its end after an expression fails, so a file with several bad
    expressions is fixed in one round: each failure is reported, and an expression that
    reads a name a failed one should have given is skipped (its error would only echo the
    first)."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.errors: list[InputError] = []
        self.failed: set[str] = set()

    def run(self, source: str, call: Any, name: str | None = None, template: bool = False
            ) -> tuple[bool, Any]:
        """(True, value), or (False, None) when it failed or read a failed name."""
        if self.failed and any(r in self.failed for r, _ in refs(source, template)):
            ok = False
        else:
            try:
                return True, call()
            except ExprError as e:
                self.errors.append(InputError(self.rule.path, str(e), item=self.rule.id))
                ok = False
        if name is not None:
            self.failed.add(name)
        return ok, None


def _run(rule: Rule, base: dict[str, Any], planned: NoneDict, explain: bool = True
         ) -> Finding | None:
    param = rule.short_parameter
    current = base["sysctl"][param] if param else None
    ctx: dict[str, Any] = {**base, "planned": planned, "current": current,
                           "parameter": rule.parameter}
    scope = Scope(ctx)  # every expression below sees ctx as it is when it runs
    if not rule.when(scope):  # what follows may assume it: a failure here ends the rule
        return None
    tried = _Attempts(rule)
    for name, expr in rule.lets:
        ok, value = tried.run(expr.source, functools.partial(expr, scope), name)
        if ok:
            ctx[name] = scope[name] = value
    recommended = None
    if rule.recommended:
        _, recommended = tried.run(rule.recommended.source,
                                   functools.partial(rule.recommended, scope), "recommended")
    if isinstance(recommended, float) and recommended.is_integer():
        recommended = int(recommended)
    ctx["recommended"] = scope["recommended"] = recommended
    for name, expr in rule.outcomes:
        ok, value = tried.run(expr.source, functools.partial(expr, scope), name)
        if ok:
            ctx[name] = scope[name] = value
    case = None
    for c in rule.cases:
        ok, chosen = tried.run(c.condition.source, functools.partial(c.condition, scope))
        if not ok:
            break  # a later case may assume this one false: which applies is unknown
        if chosen:
            case = c
            break
    summary = explanation = ""
    if case is not None:
        _, summary = tried.run(case.summary.source,
                               functools.partial(case.summary.render, ctx), template=True)
    if case is not None and explain:
        _, explanation = tried.run(rule.explanation.source,
                                   functools.partial(rule.explanation.render, ctx),
                                   template=True)
    raise_all(tried.errors)
    if case is None:
        return None
    scope = None
    if rule.parameter:
        scope = "here" if base["writable"][param] else "host"
        if param in GLOBAL_KEYS and base["conntrack"]["initial_netns"] is False:
            # before 5.13 (commit 2671fa4dc010) a container may write max and expect_max,
            # but they are the host's global values: never tuned from here
            scope = "host"
        if scope == "host" and base["readonly"][param] == "kernel":
            # read-only because of the kernel, not a container: buckets before 4.7 are
            # changed through the hashsize module parameter (kernelmodel)
            scope = "module"
        elif scope == "host" and recommended is not None and recommended != current:
            note = GLOBAL_NOTE if base["writable"][param] else HOST_ONLY_NOTE
            # the exact command for the host (the initial namespace), where it can be set
            summary = f"{summary} ({note}: sysctl -w {rule.parameter}={recommended})"
    return Finding(
        rule=rule.id, title=rule.title, severity=case.level, parameter=rule.parameter,
        current=_jsonable(current), recommended=_jsonable(recommended), summary=summary,
        explanation=explanation or "",
        evidence={name: _jsonable(ctx[name]) for name in rule.evidence},
        sources=list(rule.sources), rule_file=rule.path, scope=scope,
    )


def evaluate(rules: Iterable[Rule], facts: dict[str, Any], profile: Profile,
             keep: Mapping[str, Any] | None = None, explain: bool = True) -> list[Finding]:
    """Run every rule against the facts; a rule that fails to evaluate is a rule error.
    Every failing rule is reported (InputErrors, one line each), not only the first, so
    a rules directory with several broken files is fixed in one round.

    keep: parameters (full sysctl keys) that stay at the given value whatever their rule
    recommends; their findings still show the recommendation.
    explain: False leaves the explanations empty, for callers that show none (the fleet
    report): rendering them is a quarter of the work of a host.
    """
    keep = keep or {}
    base = build_context(facts, profile)
    unknown = unavailable(facts, base)
    planned = NoneDict(base["sysctl"])
    findings: list[Finding] = []
    errors: list[InputError] = []
    # the context's roots are this host's facts and profile, which no rule changes (planned
    # is not among them): helpers called with them are computed once for all the rules
    with HelperMemo(base.values()):
        for rule in rules:
            try:
                finding = _one(rule, base, planned, unknown, keep, explain)
            except InputError as e:
                errors.extend(flatten(e))
                continue
            if finding is not None:
                findings.append(finding)
    raise_all(errors)
    return findings


def _one(rule: Rule, base: dict[str, Any], planned: NoneDict, unknown: dict[Ref, list[str]],
         keep: Mapping[str, Any], explain: bool) -> Finding | None:
    """The rule's finding (None: none), with planned and unknown updated for the next."""
    why = _missing(rule_inputs(rule), unknown) if unknown else []
    try:
        if why and _applies(rule, base, planned, unknown) is False:
            return None  # does not apply here, whatever the missing inputs say
        finding = _unknown(rule, base, why) if why else _run(rule, base, planned, explain)
    except ExprError as e:
        raise InputError(rule.path, str(e), item=rule.id) from None
    if finding is None:
        return None
    if finding.severity == "unknown" and rule.short_parameter:
        # the rules after it must not size themselves from a value nobody assessed
        unknown.setdefault(("planned", rule.short_parameter), []).extend(
            w for w in why if w not in unknown.get(("planned", rule.short_parameter), []))
    if finding.parameter in keep:
        planned[rule.short_parameter] = keep[finding.parameter]
    elif finding.parameter and finding.recommended is not None:
        planned[rule.short_parameter] = finding.recommended
    return finding
