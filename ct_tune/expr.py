"""The sandboxed expression language rule and profile files are written in.

Rule files are data that users may drop into /etc/ct-tune/rules.d, so their
text must never run as Python.  Conditions and formulas are Jinja2 expressions
compiled in an immutable sandbox (no attribute access to internals, no
mutation), and explanations are sandboxed Jinja2 templates.  The only
functions they can call are the named, unit-tested helpers registered here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ct_tune import drift, formulas, whatif


class NoneDict(dict):
    """A mapping that answers None for a missing key, so rules can test
    ``sysctl.some_key is none`` on hosts and kernels that lack it."""

    def __missing__(self, key: str) -> None:
        return None


def _fmt_num(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _fmt_pct(value: Any, digits: int = 1) -> str:
    return "unknown" if value is None else f"{value * 100:.{digits}f}%"


HELPERS: dict[str, Callable[..., Any]] = {
    "kernel_default_buckets": formulas.kernel_default_buckets,
    "kernel_default_max": formulas.kernel_default_max,
    "default_max_factor": formulas.default_max_factor,
    "round_buckets": formulas.round_buckets,
    "round_max": formulas.round_max,
    "bucket_granularity": formulas.bucket_granularity,
    "extension_bytes": formulas.extension_bytes,
    "entry_bytes": formulas.entry_bytes,
    "table_memory": formulas.table_memory,
    "max_for_budget": formulas.max_for_budget,
    "buckets_for_max": formulas.buckets_for_max,
    "chain_length": formulas.chain_length,
    "keepalive_window": formulas.keepalive_window,
    "kube_proxy_max": formulas.kube_proxy_max,
    "usage": formulas.usage,
    "memory_base": formulas.memory_base,
    "maximum": max,
    "minimum": min,
    "ceil": math.ceil,
    "floor": math.floor,
    "chaintoolong_min": formulas.CHAINTOOLONG_MIN,
    # what-if projections from the table sample (None without one)
    "whatif": whatif.whatif,
    "occupancy": whatif.occupancy,
    "class_share": whatif.share,
    # boot configuration against the running kernel (None/[] without persist facts)
    "drift": drift.drift, "overridden": drift.overridden, "unpersisted": drift.unpersisted,
    "boot_defaults": drift.boot_defaults, "early_load": drift.early_load,
}

FILTERS: dict[str, Callable[..., Any]] = {
    "bytes": formulas.human_bytes,
    "duration": formulas.human_duration,
    "num": _fmt_num,
    "pct": _fmt_pct,
    "whatif_text": whatif.describe,
}

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                     keep_trailing_newline=False)
_ENV.globals.update(HELPERS)
_ENV.filters.update(FILTERS)


# The same source compiles to the same code, and compiled expressions and templates keep
# no state between calls: rule files repeat many ("true", shared summaries), so each
# distinct one is compiled once per process.  Failures are not cached (they raise).
_compile_expression = functools.lru_cache(maxsize=4096)(
    functools.partial(_ENV.compile_expression, undefined_to_none=False))
_compile_template = functools.lru_cache(maxsize=4096)(_ENV.from_string)


class ExprError(ValueError):
    """An expression or template failed to compile or evaluate."""


class Expr:
    """A compiled sandboxed expression that keeps its source for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._fn = _compile_expression(source)
        except TemplateError as e:
            raise ExprError(f"invalid expression {source!r}: {e}") from None

    def __call__(self, ctx: Mapping[str, Any]) -> Any:
        try:
            result = self._fn(**ctx)
        except TemplateError as e:
            raise ExprError(f"expression {self.source!r}: {e}") from None
        except (TypeError, ValueError, ZeroDivisionError, ArithmeticError) as e:
            raise ExprError(f"expression {self.source!r}: {e}") from None
        if isinstance(result, Undefined):
            raise ExprError(f"expression {self.source!r} is undefined")
        return result


class Text:
    """A compiled sandboxed explanation/summary template."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._tpl = _compile_template(source)
        except TemplateError as e:
            raise ExprError(f"invalid template: {e}") from None

    def render(self, ctx: Mapping[str, Any]) -> str:
        try:
            return self._tpl.render(**ctx).strip()
        except TemplateError as e:
            raise ExprError(f"template: {e}") from None
        except (TypeError, ValueError, ZeroDivisionError, ArithmeticError) as e:
            raise ExprError(f"template: {e}") from None
