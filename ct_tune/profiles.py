"""Profiles: the targets rules read (headroom, memory budget, timeout targets and floors).

A profile says what kind of host this is, so the same rules give a general
server, a Kubernetes node and a NAT gateway different, justified values.
Profiles are TOML data files in ``profiles/`` beside the rules, found along the
same search path; ``extends`` inherits another profile's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ct_tune import datafiles
from ct_tune.errors import InputError

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
    _need(isinstance(name, str) and name.strip() != "", path, None, "'name' is required")
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
    timeouts = data.get("timeouts", {})
    _need(isinstance(timeouts, dict), path, name, "'timeouts' must be a table")
    for key, spec in timeouts.items():
        _need(isinstance(spec, dict) and not set(spec) - _TIMEOUT_KEYS, path, name,
              f"timeouts.{key} must be a table of value, reason, source")
        _need(isinstance(spec.get("value"), int) and spec["value"] > 0, path, name,
              f"timeouts.{key}.value must be a positive integer (seconds)")
        _need(isinstance(spec.get("reason"), str) and isinstance(spec.get("source"), str),
              path, name, f"timeouts.{key} needs a 'reason' and a 'source'")
    floors = data.get("floors", {})
    _need(isinstance(floors, dict) and all(isinstance(v, int) for v in floors.values()),
          path, name, "'floors' must be a table of integer seconds")
    extends = data.get("extends")
    _need(extends is None or isinstance(extends, str), path, name, "'extends' must be a name")
    return data


def load(extra_dirs: Sequence[str | Path] = (), builtin: bool = True,
         site: Path | None = datafiles.SITE_RULES_DIR) -> dict[str, Profile]:
    """Every profile on the search path by name, inheritance resolved."""
    raw: dict[str, tuple[dict[str, Any], Path]] = {}
    for directory in datafiles.search_path(extra_dirs, builtin, site):
        for path in datafiles.toml_files(directory / "profiles"):
            data = _parse(datafiles.read_toml(path), path)
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
        resolved[name] = prof
        return prof

    for name in raw:
        resolve(name, ())
    return resolved


def get(profiles: dict[str, Profile], name: str) -> Profile:
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise InputError("--profile", f"unknown profile {name!r} (known: {known})")
    return profiles[name]
