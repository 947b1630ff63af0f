"""The sandboxed expression language rule and profile files are written in.

Rule files are data that users may drop into /etc/ct-tune/rules.d, so their
text must never run as Python.  Conditions and formulas are Jinja2 expressions
compiled in an immutable sandbox (no attribute access to internals, no
mutation), and explanations are sandboxed Jinja2 templates.  The only
functions they can call are the named, unit-tested helpers registered here.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.bccache import Bucket
from jinja2.environment import TemplateExpression
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ct_tune import __version__, bootinit, cache, drift, formulas, kernelmodel, kubeproxy, whatif


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
    "kernel_default_expect_max": formulas.kernel_default_expect_max,
    "buckets_writable": formulas.buckets_writable,
    "kernel_model": kernelmodel.describe,
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
    "unknown": drift.unknown,
    # other writers of the keys (kube-proxy) and the boot system (None without facts)
    "kube_proxy": kubeproxy.for_profile,
    "kube_proxy_owns": kubeproxy.owns, "kube_proxy_after": kubeproxy.after_start,
    "kube_proxy_hashsize": kubeproxy.hashsize_after, "after_reboot": kubeproxy.after_reboot,
    "boot_system": bootinit.boot_system, "early_load_at_boot": bootinit.early_load_at_boot,
}

FILTERS: dict[str, Callable[..., Any]] = {
    "bytes": formulas.human_bytes,
    "duration": formulas.human_duration,
    "num": _fmt_num,
    "pct": _fmt_pct,
    "whatif_text": whatif.describe,
    "pm": whatif.pm,
}

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                     keep_trailing_newline=False)
_ENV.globals.update(HELPERS)
_ENV.filters.update(FILTERS)


def _expression_tree(source: str) -> nodes.Template:
    """The template ``result = <source>``, as Environment.compile_expression builds it,
    so the code can go through the bytecode cache (compile_expression never does)."""
    parser = Parser(_ENV, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno,
                                  None, None)
    expr.set_environment(_ENV)
    return nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)],
                          lineno=1)


def cache_name(kind: str, source: str) -> str:
    """The bytecode cache's name for source (Jinja2 hashes it into the file name)."""
    return f"ct-tune {__version__} jinja2 {jinja2.__version__} {kind}\n{source}"


def _load(kind: str, source: str) -> Template:
    """Compiled code for source, from the bytecode cache when a safe one has it.

    The cache key names this ct-tune and Jinja2 version, so an upgrade never runs code
    compiled by another version; a cache entry that cannot be read is compiled again.
    """
    bcc = cache.bytecode_cache()
    bucket = None
    if bcc is not None:
        # BytecodeCache.get_bucket, except that an entry that cannot be read (truncated,
        # corrupt, I/O error) is compiled and written again rather than raising
        name = cache_name(kind, source)
        bucket = Bucket(_ENV, bcc.get_cache_key(name), bcc.get_source_checksum(source))
        try:
            bcc.load_bytecode(bucket)
        except Exception:  # of any kind: the entry is only ever a shortcut
            bucket.reset()
    code = bucket.code if bucket is not None else None
    if code is None:
        code = _ENV.compile(_expression_tree(source) if kind == "expr" else source)
        if bucket is not None:
            bucket.code = code
            with contextlib.suppress(OSError):  # full or read-only: compile again next time
                bcc.set_bucket(bucket)
    return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)


# The same source compiles to the same code, and compiled expressions and templates keep
# no state between calls: rule files repeat many ("true", shared summaries), so each
# distinct one is loaded once per process.  Failures are not cached (they raise).
@functools.lru_cache(maxsize=4096)
def _compile_expression(source: str) -> TemplateExpression:
    return TemplateExpression(_load("expr", source), undefined_to_none=False)


@functools.lru_cache(maxsize=4096)
def _compile_template(source: str) -> Template:
    return _load("text", source)


class ExprError(ValueError):
    """An expression or template failed to compile or evaluate."""


class Expr:
    """A compiled sandboxed expression that keeps its source for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._fn = _compile_expression(source)
        except TemplateError as e:
            # the bare message: a syntax error's str() would add a "line 1" line
            raise ExprError(f"invalid expression {source!r}: {e.message or e}") from None

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
