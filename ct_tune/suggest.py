"""Near misses: the "did you mean" of a mistyped rule or profile id (pure, stdlib only,
so the loaders can use it without importing the modules that list them)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'conntrack-max'?)' for a near miss, else ''.  A name that differs
    only in '_' for '-' or in case (rule ids use dashes, sysctl names underscores) is
    the one answer; otherwise names it begins, then difflib's closest, at most two."""
    known = sorted(set(known))
    norm = {k.lower().replace("_", "-"): k for k in known}
    exact = norm.get(name.lower().replace("_", "-"))
    if exact:
        close = [exact]
    else:
        close = [k for k in known if name and k.startswith(name)]
        close += [c for c in difflib.get_close_matches(name.lower().replace("_", "-"),
                                                        known, n=2, cutoff=0.6)
                  if c not in close]
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close[:2]) + "?)"
