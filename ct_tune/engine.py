"""The rules engine: facts + profile + rules -> findings, with no I/O.

Rules run in dependency order.  Each sees the host's facts, the profile, and
``planned``: every parameter's value as the rules so far recommend it (or its
current value), which is how the buckets and memory rules size themselves from
the *recommended* max rather than the current one, keeping the recommendations
consistent with one another.  A caller that will not act on a recommendation
(apply keeps nf_conntrack_max unless --allow-lower) passes it in ``keep``, so the
rules after it size themselves from the value that stays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ct_tune.errors import InputError
from ct_tune.expr import ExprError, NoneDict
from ct_tune.findings import Finding
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
        # the boot configuration (sysctl.d, modules-load.d); None for older snapshots
        "persist": facts.get("persist"),
        # other writers of the keys and the boot system (ct_tune.writers); None if unknown
        "writers": facts.get("writers"),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isinf(value) or math.isnan(value) else round(value, 6)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _run(rule: Rule, base: dict[str, Any], planned: NoneDict) -> Finding | None:
    param = rule.short_parameter
    current = base["sysctl"][param] if param else None
    ctx: dict[str, Any] = {**base, "planned": planned, "current": current,
                           "parameter": rule.parameter}
    if not rule.when(ctx):
        return None
    for name, expr in rule.lets:
        ctx[name] = expr(ctx)
    recommended = rule.recommended(ctx) if rule.recommended else None
    if isinstance(recommended, float) and recommended.is_integer():
        recommended = int(recommended)
    ctx["recommended"] = recommended
    for name, expr in rule.outcomes:
        ctx[name] = expr(ctx)
    case = next((c for c in rule.cases if c.condition(ctx)), None)
    if case is None:
        return None
    summary = case.summary.render(ctx)
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
            summary = f"{summary} ({note})"
    return Finding(
        rule=rule.id, title=rule.title, severity=case.level, parameter=rule.parameter,
        current=_jsonable(current), recommended=_jsonable(recommended), summary=summary,
        explanation=rule.explanation.render(ctx),
        evidence={name: _jsonable(ctx[name]) for name in rule.evidence},
        sources=list(rule.sources), rule_file=rule.path, scope=scope,
    )


def evaluate(rules: Iterable[Rule], facts: dict[str, Any], profile: Profile,
             keep: Mapping[str, Any] | None = None) -> list[Finding]:
    """Run every rule against the facts; a rule that fails to evaluate is a rule error.

    keep: parameters (full sysctl keys) that stay at the given value whatever their rule
    recommends; their findings still show the recommendation.
    """
    keep = keep or {}
    base = build_context(facts, profile)
    planned = NoneDict(base["sysctl"])
    findings: list[Finding] = []
    for rule in rules:
        try:
            finding = _run(rule, base, planned)
        except ExprError as e:
            raise InputError(rule.path, str(e), item=rule.id) from None
        if finding is None:
            continue
        if finding.parameter in keep:
            planned[rule.short_parameter] = keep[finding.parameter]
        elif finding.parameter and finding.recommended is not None:
            planned[rule.short_parameter] = finding.recommended
        findings.append(finding)
    return findings
