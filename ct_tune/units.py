"""Values as people read them: one format per kind, the same in every view.

The table, --explain, 'apply' and 'profiles show' all print a value through here, so a
timeout reads "30 s" or "86,400 s (1 d)" wherever it appears, a size "1.2 GiB", a share
"95.7 %".  Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ct_tune.formulas import human_bytes, human_duration

#: Units a rule may give its evidence (the rule file's ``units`` table, ct-tune-rules(5)).
UNITS = ("bytes", "seconds", "days", "ratio", "percent", "count", "per_second")
_TIMEOUT_HINT = "_timeout"


def duration(seconds: int | float) -> str:
    """The one duration format: seconds with thousands separators, then the two largest
    units when that is a minute or more (30 -> '30 s', 432000 -> '432,000 s (5 d)')."""
    text = f"{number(seconds)} s"
    if abs(seconds) >= 60:
        text += f" ({human_duration(seconds)})"
    return text


def number(x: int | float) -> str:
    """An int with thousands separators; a float rounded to what a person compares
    (3 significant digits below 100, whole numbers above), never '1263825510.4'."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if not math.isfinite(x):
        return str(x)
    if float(x).is_integer() or abs(x) >= 100:
        return f"{round(x):,}"
    text = f"{x:.3g}"
    return text if "e" not in text else f"{x:.6f}".rstrip("0").rstrip(".")


def value(parameter: str | None, v: Any) -> str:
    """A sysctl value in the table and the headers of --explain ('-' when unknown)."""
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        if parameter and _TIMEOUT_HINT in parameter:
            return duration(v)
        return number(v)
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return str(v)


def with_unit(v: Any, unit: str | None) -> str:
    """One evidence value in its unit; nested values (a what-if, a list of keys) item by item."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        if unit == "port":
            return str(v)
        if unit == "bytes":
            return human_bytes(v)
        if unit == "seconds":
            return duration(round(v) if abs(v) >= 1 else v)
        if unit == "days":
            return f"{number(v)} d"
        if unit == "ratio":
            return f"{number(v * 100)} %"
        if unit == "percent":
            return f"{number(v)} %"
        if unit == "per_second":
            return f"{number(v)}/s"
        return number(v)
    if isinstance(v, Mapping):
        items = [f"{k} {with_unit(x, _unit_of_key(str(k)))}" for k, x in v.items()
                 if x is not None and not (str(k).endswith("_margin") and x == 0)]
        return "; ".join(items) if items else "none"
    if isinstance(v, list | tuple):
        if not v:
            return "nothing"
        if unit == "ports":
            return ", ".join(_port_count(x) for x in v)
        return "; ".join(f"({with_unit(x, unit)})" if isinstance(x, list | tuple) else
                         with_unit(x, unit) for x in v)
    return str(v)


def _unit_of_key(key: str) -> str | None:
    """The unit of a value inside a nested evidence object (a what-if, a held-by), by the
    names ct-tune's helpers give them: shares are ratios, timeouts seconds, ports bare."""
    if key == "share" or key.endswith("_share"):
        return "ratio"
    if key in ("timeout", "proposed", "default") or key.endswith(("_timeout", "_seconds")):
        return "seconds"
    if key in ("port", "dport"):
        return "port"
    if key.endswith("_dports") or key == "dports":
        return "ports"
    return None


def _port_count(item: Any) -> str:
    """[port, entries(, margin)] as 'port x entries' (a port never gets separators)."""
    if isinstance(item, list | tuple) and len(item) >= 2 and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in item):
        margin = f" +- {number(item[2])}" if len(item) > 2 and item[2] else ""
        return f"{item[0]} x {number(item[1])}{margin}"
    return with_unit(item, None)
