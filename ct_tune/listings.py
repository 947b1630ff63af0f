"""What `rules list`, `profiles show` and the "did you mean" of an unknown id print.

Pure: text from loaded rules and profiles; cli.py writes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ct_tune import units

if TYPE_CHECKING:
    from ct_tune.profiles import Profile
    from ct_tune.ruleset import Rule


def rules_table(rules: Iterable[Rule]) -> str:
    """id | severity | parameter | file, sorted by id."""
    from tabulate import tabulate

    rows = [[r.id, r.max_level, r.parameter or "-", r.path]
            for r in sorted(rules, key=lambda r: r.id)]
    return tabulate(rows, headers=["id", "severity", "parameter", "file"], tablefmt="simple")


def _target(key: str, value: Any) -> str:
    from ct_tune.profiles import RANGES

    low, high, _ = RANGES.get(key, (0, 0, False))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if (low, high) == (0, 1) and isinstance(value, int | float):
        return units.with_unit(value, "ratio")
    if key.endswith("_pct"):
        return units.with_unit(value, "percent")
    return units.number(value) if isinstance(value, int | float) else str(value)


def profile_text(p: Profile) -> str:
    """A profile with what `extends` brought in already merged: its targets with their
    meaning, its timeout targets (value, reason, source) and floors, durations in the one
    format the audit uses."""
    from ct_tune.profiles import TARGETS

    out = [f"profile {p.name}: {p.description}", f"file: {p.path}", "", "targets:"]
    for key, value in sorted(p.targets.items()):
        meaning = TARGETS.get(key, (None, ""))[1]
        out.append(f"  {key} = {_target(key, value)}" + (f"  ({meaning})" if meaning else ""))
    if p.timeouts:
        out += ["", "timeouts:"]
        for key, spec in sorted(p.timeouts.items()):
            value = spec.get("value")
            out.append(f"  {key} = "
                       + (units.duration(value) if isinstance(value, int) else str(value)))
            if spec.get("reason"):
                out.append(f"      why: {spec['reason']}")
            if spec.get("source"):
                out.append(f"      source: {spec['source']}")
    if p.floors:
        out += ["", "floors (no rule recommends less):"]
        out += [f"  {key} = "
                + (units.duration(v) if "timeout" in key and isinstance(v, int)
                   else units.number(v))
                for key, v in sorted(p.floors.items())]
    return "\n".join(out)
