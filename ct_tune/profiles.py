"""Profiles: the targets rules read (headroom, memory budget, timeout targets and floors).

A profile says what kind of host this is, so the same rules give a general
server, a Kubernetes node and a NAT gateway different, justified values.
Profiles are TOML data files in ``profiles/`` beside the rules, found along the
same search path; ``extends`` inherits another profile's values.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ct_tune import datafiles
from ct_tune.errors import InputError, InputErrors, flatten, raise_all
from ct_tune.sysctlkeys import INT_MAX, MAX_HZ, full_name, spec

#: Every target a profile may set, with its type and meaning (docs for `profiles show`).
TARGETS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "target_usage": ((int, float), "size max so the table is at most this full (fraction)"),
    "warn_usage": ((int, float), "usage (fraction of max) that is a warning"),
    "crit_usage": ((int, float), "usage (fraction of max) that is critical"),
    "memory_budget_pct": ((int, float), "% of RAM (lowmem on 32-bit) a full table may cost"),
    "memory_crit_pct": ((int, float), "% of RAM (lowmem on 32-bit) that is critical"),
    "max_per_bucket": (int, "entries per hash bucket at a full table (kernel default 1)"),
    "min_max": (int, "never recommend a max below this"),
    "follow_kube_proxy": (bool, "assume kube-proxy runs (defaults, release 1.37 behaviour) when "
                                "none is detected, so advice agrees with what it writes"),
    "dominance_share": ((int, float),
                        "a flow class (TIME_WAIT, CLOSE_WAIT, unreplied UDP) holding this share "
                        "of the sampled table is reported"),
    "dominance_min_usage": ((int, float),
                            "... only once it holds at least this fraction of max"),
}
#: The values each target may take: a fraction of the table, a percentage of RAM, a count.
#: Anything else (0, a negative, nan, a 300-digit min_max) yields nonsense or a value
#: the kernel would refuse, so it is refused where it was written.
RANGES: dict[str, tuple[float, float, bool]] = {  # (low, high, low is exclusive)
    "target_usage": (0, 1, True), "warn_usage": (0, 1, True), "crit_usage": (0, 1, True),
    "memory_budget_pct": (0, 100, True), "memory_crit_pct": (0, 100, True),
    "max_per_bucket": (1, 1024, False), "min_max": (0, INT_MAX, False),
    "dominance_share": (0, 1, False), "dominance_min_usage": (0, 1, False),
}
#: Targets that must not decrease in this order, checked once `extends` is resolved: a
#: table sized to target_usage must not itself be a warning (the audit would warn "raise
#: max" while recommending to keep it), a warning must come before critical, and a full
#: table within the memory budget must not be a critical memory use.
ORDERED: tuple[tuple[str, ...], ...] = (("target_usage", "warn_usage", "crit_usage"),
                                        ("memory_budget_pct", "memory_crit_pct"))
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: profile timeouts and floors name conntrack keys by their short name
KEY_RE = re.compile(r"nf_conntrack_[a-z0-9_]+")
#: the longest timeout any kernel accepts (proc_dointvec_jiffies, see sysctlkeys)
TIMEOUT_MAX = INT_MAX // MAX_HZ
_KEYS = {"name", "description", "extends", "targets", "timeouts", "floors"}
_TIMEOUT_KEYS = {"value", "reason", "source"}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    path: str
    targets: dict[str, Any] = field(default_factory=dict)
    #: sysctl short name -> {"value", "reason", "source"}
    timeouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: sysctl short name -> lowest value any rule may recommend
    floors: dict[str, int] = field(default_factory=dict)

    def as_context(self) -> dict[str, Any]:
        """What rule expressions see as ``profile``."""
        return {"name": self.name, "targets": dict(self.targets),
                "timeouts": {k: dict(v) for k, v in self.timeouts.items()},
                "floors": dict(self.floors)}


def _need(cond: bool, path: Path, name: str | None, problem: str) -> None:
    if not cond:
        raise InputError(str(path), problem, item=name or "(no name)")


def _parse(data: dict[str, Any], path: Path) -> dict[str, Any]:
    name = data.get("name")
    _need(isinstance(name, str) and bool(NAME_RE.fullmatch(name)), path, None,
          "'name' is required: letters, digits, '.', '_' and '-' (at most 64), e.g. 'k8s-node'")
    problem = datafiles.number_problem(data)
    _need(problem is None, path, name, problem or "")
    bad = sorted(set(data) - _KEYS)
    _need(not bad, path, name, f"unknown key(s): {', '.join(bad)}")
    targets = data.get("targets", {})
    _need(isinstance(targets, dict), path, name, "'targets' must be a table")
    for key, value in targets.items():
        _need(key in TARGETS, path, name,
              f"unknown target {key!r} (known: {', '.join(sorted(TARGETS))})")
        typ = TARGETS[key][0]
        ok = isinstance(value, typ) and (typ is bool or not isinstance(value, bool))
        _need(ok, path, name, f"target {key!r} has the wrong type ({type(value).__name__})")
        low, high, open_low = RANGES.get(key, (False, True, False))
        _need((low < value if open_low else low <= value) and value <= high, path, name,
              f"target {key!r} = {value} is outside {'(' if open_low else '['}{low}, {high}]")
    description = data.get("description", "")
    _need(isinstance(description, str), path, name, "'description' must be a string")
    timeouts = data.get("timeouts", {})
    _need(isinstance(timeouts, dict), path, name, "'timeouts' must be a table")
    for key, entry in timeouts.items():
        _need(bool(KEY_RE.fullmatch(key)), path, name,
              f"timeouts.{key}: not a conntrack key's short name (nf_conntrack_...)")
        _need(isinstance(entry, dict) and not set(entry) - _TIMEOUT_KEYS, path, name,
              f"timeouts.{key} must be a table of value, reason, source")
        value = entry.get("value")
        key_spec = spec(full_name(key))
        bad_value = (key_spec.write_problem(value) if key_spec else None) or (
            None if isinstance(value, int) and not isinstance(value, bool)
            and 0 < value <= TIMEOUT_MAX else "not a positive integer")
        _need(bad_value is None, path, name, f"timeouts.{key}.value: {bad_value}")
        _need(isinstance(entry.get("reason"), str) and isinstance(entry.get("source"), str),
              path, name, f"timeouts.{key} needs a 'reason' and a 'source'")
    floors = data.get("floors", {})
    _need(isinstance(floors, dict), path, name, "'floors' must be a table of integer seconds")
    for key, value in floors.items():
        _need(bool(KEY_RE.fullmatch(key)), path, name,
              f"floors.{key}: not a conntrack key's short name (nf_conntrack_...)")
        _need(isinstance(value, int) and not isinstance(value, bool)
              and 0 <= value <= TIMEOUT_MAX, path, name,
              f"floors.{key} must be an integer number of seconds, 0..{TIMEOUT_MAX:,}")
    extends = data.get("extends")
    _need(extends is None or isinstance(extends, str), path, name, "'extends' must be a name")
    return data


def load(extra_dirs: Sequence[str | Path] = (), builtin: bool = True,
         site: Path | None = datafiles.SITE_RULES_DIR) -> dict[str, Profile]:
    """Every profile on the search path by name, inheritance resolved.  Every bad file is
    reported (InputErrors); two files of one directory with the same name are an error
    naming both."""
    raw: dict[str, tuple[dict[str, Any], Path]] = {}
    errors: list[InputError] = []
    for directory in datafiles.search_path(extra_dirs, builtin, site):
        here: dict[str, Path] = {}
        for path in datafiles.toml_files(directory / "profiles"):
            try:
                data = _parse(datafiles.read_toml(path), path)
            except (InputError, InputErrors) as e:
                errors.extend(flatten(e))
                continue
            if data["name"] in here:
                errors.append(InputError(str(path), "duplicate profile name: "
                                         f"{here[data['name']]} in the same directory has it "
                                         "too", item=data["name"]))
                continue
            here[data["name"]] = path
            raw[data["name"]] = (data, path)

    resolved: dict[str, Profile] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Profile:
        if name in resolved:
            return resolved[name]
        data, path = raw[name]
        base = Profile(name="", description="", path="")
        parent = data.get("extends")
        if parent is not None:
            _need(parent in raw, path, name, f"extends unknown profile {parent!r}")
            _need(parent not in chain, path, name, "'extends' forms a cycle")
            base = resolve(parent, (*chain, name))
        prof = Profile(
            name=name,
            description=data.get("description", base.description),
            path=str(path),
            targets={**base.targets, **data.get("targets", {})},
            timeouts={**base.timeouts, **data.get("timeouts", {})},
            floors={**base.floors, **data.get("floors", {})},
        )
        missing = sorted(set(TARGETS) - set(prof.targets))
        _need(not missing, path, name, f"missing target(s): {', '.join(missing)}")
        t = prof.targets
        disorder = [f"target {low!r} = {t[low]} is above {high!r} = {t[high]}"
                    for order in ORDERED for low, high in itertools.pairwise(order)
                    if t[low] > t[high]]
        _need(not disorder, path, name, "; ".join(disorder) + " (each of "
              + ", ".join(" <= ".join(order) for order in ORDERED) + " must hold)")
        resolved[name] = prof
        return prof

    for name in raw:
        try:
            resolve(name, ())
        except InputError as e:
            if e.message not in {x.message for x in errors}:
                errors.append(e)
    raise_all(errors)
    return resolved


def get(profiles: dict[str, Profile], name: str, where: str = "--profile") -> Profile:
    if name not in profiles:
        from ct_tune.suggest import did_you_mean

        known = ", ".join(sorted(profiles)) or "none"
        raise InputError(where, f"unknown profile {name!r}"
                         f"{did_you_mean(name, profiles)} (known: {known})")
    return profiles[name]
