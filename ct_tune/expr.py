"""The sandboxed expression language rule and profile files are written in.

Rule files are data that users may drop into /etc/ct-tune/rules.d, so their
text must never run as Python.  Conditions and formulas are Jinja2 expressions
compiled in an immutable sandbox (no attribute access to internals, no
mutation), and explanations are sandboxed Jinja2 templates.  The only
functions they can call are the named, unit-tested helpers registered here.

The sandbox also bounds the work a rule can ask for, so a rule file cannot make
root's audit hang or run out of memory: no value may grow beyond LIMITS (a string,
list or the text of a value), integers stay below 10^100, a loop or call counts
against a per-evaluation budget, and the few built-in filters and str methods that
build text from a size argument (center, ljust, format_map, ...) are not offered.
Blocks that loop without a visible bound (macros, recursive loops) are refused when
the file is loaded.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jinja2
from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.bccache import Bucket
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

from ct_tune import (
    __version__,
    attribution,
    bootinit,
    cache,
    drift,
    formulas,
    kernelmodel,
    kubeproxy,
    nsload,
    whatif,
)


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
    if not isinstance(digits, int) or not 0 <= digits <= 20:
        raise ValueError(f"pct: digits must be 0 to 20, not {digits!r}")
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
    # which timeouts hold the table and what changing each frees (ct_tune/attribution.py)
    "attribution": attribution.attribution, "relief": attribution.relief,
    # the other network namespaces' tables against the global max (ct_tune/nsload.py)
    "busiest_namespace": nsload.busiest,
    "held_by": attribution.held_by, "dominant_port": attribution.dominant_port,
    "protocol_mix": attribution.protocol_mix, "notrack_candidate": attribution.notrack_candidate,
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

#: The size of any one value: characters of a string (and of the text of any value),
#: items of a list; integers stay below 2**INT_BITS (about 10^100).
MAX_SIZE = 1 << 20
INT_BITS = 333
#: Work one expression or template evaluation may do, in the units _weigh counts
#: (characters and items made) with a loop iteration or a call counting STEP: the
#: shipped rules use < 10^4; the budget stops a runaway loop within seconds.
WORK = 1 << 22
STEP = 16
#: Built-in filters offered to rules: each returns at most a fixed multiple of its input.
SAFE_FILTERS = {"abs", "attr", "capitalize", "count", "d", "default", "dictsort", "first",
                "float", "format", "int", "items", "join", "last", "length", "list", "lower",
                "map", "max", "min", "reject", "rejectattr", "reverse", "round", "select",
                "selectattr", "sort", "string", "sum", "title", "trim", "unique", "upper"}
#: str methods that build a string from a size argument or a repeat count.
UNSAFE_STR_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs", "format",
                      "format_map", "join", "replace", "translate", "maketrans"}
#: Filters that only count, pick or pass on references: every other filter may turn its
#: whole input into text, so its input is weighed first (a list literal can repeat one
#: 1 MiB string a thousand times at the cost of a thousand references).
CHEAP_FILTERS = {"length", "count", "first", "last", "default", "d", "attr", "list", "map",
                 "select", "reject", "selectattr", "rejectattr", "items", "abs", "int",
                 "float", "round", "reverse", "max", "min", "sum", "num"}
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d*)(?:\.(\*|\d*))?[a-zA-Z%]")


class LimitError(SecurityError):
    """A rule asked for more work or a larger value than the sandbox allows."""


class _Budget:
    """Work left in the current evaluation (one process evaluates one thing at a time)."""

    left = WORK

    @classmethod
    def reset(cls) -> None:
        cls.left = WORK

    @classmethod
    def spend(cls, units: int) -> None:
        cls.left -= units
        if cls.left < 0:
            raise LimitError("too much work: the expression or template exceeds the "
                             f"sandbox's budget of {WORK:,} steps")


def _weigh(value: Any, cap: int = MAX_SIZE) -> int:
    """About how many characters str(value) has, counted only up to just past cap (so the
    count costs no more than what it bounds).  Iterative: no recursion of its own."""
    kind = type(value)  # the common results first: most expressions give a number
    if kind is int:
        return 1 + value.bit_length() // 3
    if kind is str:
        return len(value)
    if kind is bool or value is None:
        return 1
    if kind is float:
        return 8
    total = 0
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        v = pop()
        kind = type(v)
        # the exact built-in types first (helpers return dicts of lists of str and int);
        # the same count as the general case below, which subclasses and the rest take
        if kind is str:
            total += len(v)
        elif kind is int:
            total += 1 + v.bit_length() // 3
        elif kind is dict:
            total += 1 + len(v)
            if total <= cap:  # each (key, value) item counts 1 + 2, as a tuple would
                total += 3 * len(v)
                extend(v.keys())
                extend(v.values())
        elif kind is list or kind is tuple:
            total += 1 + len(v)
            if total <= cap:
                extend(v)
        elif kind is bool or v is None:
            total += 1
        elif kind is float:
            total += 8
        elif isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, bool) or v is None:
            total += 1
        elif isinstance(v, int):
            total += 1 + v.bit_length() // 3
        elif isinstance(v, (list, tuple, set, frozenset, dict, range)):
            total += 1 + len(v)
            if total <= cap:
                stack.extend(v.items() if isinstance(v, dict) else v)
        else:
            total += 8
        if total > cap:
            return total
    return total


def _bounded(value: Any, what: str = "value") -> Any:
    """value, once it is known to be within MAX_SIZE (its weight is spent from the budget)."""
    weight = _weigh(value)
    if weight > MAX_SIZE:
        raise LimitError(f"{what} too large: the sandbox allows {MAX_SIZE:,} characters "
                         "or items")
    if isinstance(value, int) and value.bit_length() > INT_BITS:
        raise LimitError(f"{what} too large: integers stay below 10^100")
    _Budget.spend(weight)
    return value


def _printf_room(fmt: str, args: Any) -> int:
    """The most characters fmt % args can produce (refusing a '*' width from the args)."""
    room = len(fmt) + _weigh(args)
    for m in _PRINTF_SPEC.finditer(fmt):
        for part in m.groups():
            if part == "*":
                raise LimitError("'*' widths are not allowed in format strings")
            if part and len(part) > 4:
                raise LimitError(f"format width or precision {part} is too large")
            room += int(part or 0)
    return room


def _multiply(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > INT_BITS + 1:
            raise LimitError("product too large: integers stay below 10^100")
    elif isinstance(left, int) or isinstance(right, int):
        seq, times = (right, left) if isinstance(left, int) else (left, right)
        if isinstance(seq, (str, list, tuple)) and times > 0 \
                and _weigh(seq, MAX_SIZE // times + 1) * times > MAX_SIZE:
            raise LimitError(f"repetition too large: the sandbox allows {MAX_SIZE:,} "
                             "characters or items")
    return left * right


def _power(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1 \
            and (abs(left).bit_length() - 1) * right > INT_BITS:
        raise LimitError("power too large: integers stay below 10^100")
    return left ** right


def _add(left: Any, right: Any) -> Any:
    if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)) \
            and _weigh(left) + _weigh(right) > MAX_SIZE:
        raise LimitError(f"sum too large: the sandbox allows {MAX_SIZE:,} characters or "
                         "items")
    return left + right


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str) and _printf_room(left, right) > MAX_SIZE:
        raise LimitError("formatted string too large")
    return left % right


class _BoundedTree(NodeTransformer):
    """Route string concatenation (~) and every loop's iterable through the budget, and
    refuse the blocks that could loop without one."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Call(nodes.EnvironmentAttribute("ct_concat"), list(node.nodes), [],
                          None, None, lineno=node.lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        if node.recursive:
            raise TemplateSyntaxError("recursive loops are not allowed in rule files",
                                      node.lineno)
        node = self.generic_visit(node)
        node.iter = nodes.Call(nodes.EnvironmentAttribute("ct_iterate"), [node.iter], [],
                               None, None, lineno=node.lineno)
        return node

    def visit_Const(self, node: nodes.Const) -> nodes.Node:
        # 1e400 parses as inf, which the generated Python names as an undefined `inf`
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise TemplateSyntaxError(f"number out of range: {node.value}", node.lineno)
        return node

    def _refuse(self, node: nodes.Node) -> nodes.Node:
        raise TemplateSyntaxError(f"{type(node).__name__.lower()} blocks are not allowed in "
                                  "rule files", node.lineno)

    visit_Macro = visit_CallBlock = visit_Include = visit_Import = _refuse
    visit_FromImport = visit_Extends = visit_Block = _refuse


def ct_iterate_all(iterable: Iterable[Any]) -> Iterator[Any]:
    """The items of an iterable, each spent from the budget."""
    for item in iterable:
        _Budget.spend(STEP)
        yield item


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every operation that can build a large value checked."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(finalize=self._finalize, **kwargs)
        self.binop_table.update({"*": _multiply, "**": _power, "+": _add, "%": _modulo})
        for name in ("lipsum", "cycler", "joiner", "namespace"):
            self.globals.pop(name, None)
        self.filters = {name: self._bounded_filter(name, f)
                        for name, f in self.filters.items() if name in SAFE_FILTERS}

    @staticmethod
    def _finalize(value: Any) -> Any:
        return _bounded(value, "output")

    @staticmethod
    def _bounded_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            _Budget.spend(STEP)
            if name in ("join", "sum") and len(args) > 1:
                # (eval context or environment, iterable, ...): a lazy iterable (map,
                # select) is taken as the list it yields, so it is weighed before use
                args = (args[0], _bounded(list(ct_iterate_all(args[1])), name), *args[2:])
            if name == "sum" and not all(isinstance(x, (int, float)) for x in args[1]):
                raise LimitError("sum adds numbers only")
            if name not in CHEAP_FILTERS:
                _bounded((args, kwargs), f"input of the {name} filter")
            if name == "format" and args and isinstance(args[0], str) \
                    and _printf_room(args[0], args[1:]) > MAX_SIZE:
                raise LimitError("formatted string too large")
            return _bounded(f(*args, **kwargs), f"result of the {name} filter")
        return bounded

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in UNSAFE_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        _Budget.spend(STEP)
        if _DIRECT.get(id(__obj)) is __obj:
            # one of the registered helpers, which Jinja2 would find safe and pass no
            # context to (checked once, in _direct_helpers): called as Context.call does
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            memo = HelperMemo.active
            key = None
            if memo is not None and id(__obj) in _MEMOIZED and not kwargs \
                    and all(memo.stable.get(id(a), _NOTHING) is a for a in args):
                key = (id(__obj), *map(id, args))
                if key in memo.results:
                    return _bounded(memo.results[key], "call result")
            try:
                result = __obj(*args, **kwargs)
            except StopIteration:
                result = __self.undefined("value was undefined because a callable raised "
                                          "a StopIteration exception")
            if key is not None:
                memo.results[key] = result
            return _bounded(result, "call result")
        return _bounded(super().call(__context, __obj, *args, **kwargs), "call result")

    @staticmethod
    def ct_concat(*parts: Any) -> str:
        """'a ~ b': the text of every part, bounded before it is built."""
        _bounded(parts, "concatenation")
        return "".join(map(str, parts))

    #: a loop's items, each one spent from the budget
    ct_iterate = staticmethod(ct_iterate_all)


_ENV = BoundedSandbox(undefined=StrictUndefined, autoescape=False,
                      keep_trailing_newline=False)
_ENV.globals.update(HELPERS)
_ENV.filters.update({name: _ENV._bounded_filter(name, f) for name, f in FILTERS.items()})
_GLOBALS = dict(_ENV.make_globals(None))


def _direct_helpers() -> dict[int, Callable[..., Any]]:
    """The helpers the sandbox may call without Jinja2's per-call checks, by id: safely
    callable, and taking no context, eval context or environment (their own or their
    __call__'s), so Context.call would call them with the arguments as given."""
    from jinja2.utils import _PassArg

    out = {}
    for f in HELPERS.values():
        if not callable(f) or not _ENV.is_safe_callable(f) or _PassArg.from_obj(f) is not None:
            continue
        if hasattr(f, "__call__") and _PassArg.from_obj(f.__call__) is not None:  # noqa: B004
            continue
        out[id(f)] = f
    return out


_DIRECT = _direct_helpers()
#: Helpers that are pure functions of their arguments, which several rules call with the
#: same facts: computed once per host while a HelperMemo is active (engine.evaluate)
_MEMOIZED = frozenset(id(HELPERS[name]) for name in
                      ("boot_defaults", "early_load_at_boot", "kube_proxy"))
_NOTHING = object()


class HelperMemo:
    """While active (a with block): the results of the _MEMOIZED helpers called with
    arguments that are all among ``stable``, objects nothing changes while it is active
    (one host's facts), by the identity of the helper and of each argument.  A result is
    handed out again as it is: rule expressions cannot change a value (the sandbox is
    immutable); it is still weighed and spent from the budget on every call."""

    active: HelperMemo | None = None

    def __init__(self, stable: Iterable[Any]) -> None:
        self.stable = {id(o): o for o in stable}
        self.results: dict[tuple[int, ...], Any] = {}
        self._outer: HelperMemo | None = None

    def __enter__(self) -> HelperMemo:
        self._outer, HelperMemo.active = HelperMemo.active, self
        return self

    def __exit__(self, *exc: object) -> None:
        HelperMemo.active = self._outer


def _expression_tree(source: str) -> nodes.Template:
    """The template ``result = <source>``, as Environment.compile_expression builds it,
    so the code can go through the bytecode cache (compile_expression never does)."""
    parser = Parser(_ENV, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno,
                                  None, None)
    expr.set_environment(_ENV)
    return _bound(nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr,
                                               lineno=1)], lineno=1))


def _bound(tree: nodes.Template) -> nodes.Template:
    tree = _BoundedTree().visit(tree)
    tree.set_environment(_ENV)
    return tree


def cache_name(kind: str, source: str) -> str:
    """The bytecode cache's name for source (Jinja2 hashes it into the file name)."""
    return f"ct-tune {__version__} jinja2 {jinja2.__version__} {_SANDBOX} {kind}\n{source}"


#: Changes when the code generated for the same source changes (the bounded sandbox),
#: so a cache never hands back code compiled without those bounds.
_SANDBOX = "bounded-2"


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
        code = _ENV.compile(_expression_tree(source) if kind == "expr"
                            else _bound(_ENV.parse(source)))
        if bucket is not None:
            bucket.code = code
            with contextlib.suppress(OSError):  # full or read-only: compile again next time
                bcc.set_bucket(bucket)
    # A plain dict of the globals, not make_globals' ChainMap: Jinja2 copies the globals
    # into every evaluation's context, and copying a ChainMap walks it key by key (the
    # environment's globals are complete once this module is imported).
    return _ENV.template_class.from_code(_ENV, code, _GLOBALS, None)


# The same source compiles to the same code, and compiled expressions and templates keep
# no state between calls: rule files repeat many ("true", shared summaries), so each
# distinct one is loaded once per process.  Failures are not cached (they raise).
@functools.lru_cache(maxsize=4096)
def _compile_expression(source: str) -> Template:
    return _load("expr", source)


def _evaluate(template: Template, ctx: Mapping[str, Any]) -> Any:
    """What TemplateExpression(template)(**ctx) returns, with one copy of the variables
    instead of three: rules evaluate thousands of expressions per fleet report."""
    context = _ENV.context_class(_ENV, {**_GLOBALS, **ctx}, None, {})
    for _ in template.root_render_func(context):
        pass
    return context.vars["result"]


class Scope:
    """The variables several expressions are evaluated with (one rule's, on one host), with
    the globals merged in and the Jinja2 context built once rather than per expression:
    that copy and that context were a third of the cost of a typical expression.

    Evaluating in a Scope is evaluating with ``dict(scope.vars)``: the context's own
    variables (the ``result`` of the previous expression) are cleared before each one, and
    the compiled expressions write nothing else (they are ``result = <expression>``).
    """

    __slots__ = ("_context", "vars")

    def __init__(self, ctx: Mapping[str, Any]) -> None:
        self.vars: dict[str, Any] = {**_GLOBALS, **ctx}
        self._context = _ENV.context_class(_ENV, self.vars, None, {})

    def __setitem__(self, name: str, value: Any) -> None:
        self.vars[name] = value


def _evaluate_in(template: Template, scope: Scope) -> Any:
    """_evaluate(template, ctx) for the ctx the scope holds."""
    context = scope._context
    context.vars.clear()
    for _ in template.root_render_func(context):
        pass
    return context.vars["result"]


@functools.lru_cache(maxsize=4096)
def _compile_template(source: str) -> Template:
    return _load("text", source)


class ExprError(ValueError):
    """An expression or template failed to compile or evaluate."""


#: What compiling or evaluating arbitrary rule text can raise besides TemplateError:
#: nesting past the parser's or Python's recursion limit, Python's own limits on
#: generated code (SyntaxError: too many nested parentheses), an integer literal past
#: the digit limit, and arithmetic (1e308 * 10 ** 10 overflow, 1 / 0)
_FAILURES = (RecursionError, MemoryError, SyntaxError, TypeError, ValueError,
             ArithmeticError, IndexError, KeyError, AttributeError, NameError)


def _brief(source: str, limit: int = 80) -> str:
    """The source for an error line, cut so a megabyte of rule text stays one short line."""
    return repr(source if len(source) <= limit else source[:limit] + "...")


def _why(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, MemoryError):
        return "too large"
    if isinstance(e, TemplateError):
        return e.message or str(e)
    return str(e) or type(e).__name__


class Expr:
    """A compiled sandboxed expression that keeps its source for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._tpl = _compile_expression(source)
        except (TemplateError, *_FAILURES) as e:
            # the bare message: a syntax error's str() would add a "line 1" line
            raise ExprError(f"invalid expression {_brief(source)}: {_why(e)}") from None

    def __call__(self, ctx: Mapping[str, Any] | Scope) -> Any:
        _Budget.reset()
        try:
            result = (_evaluate_in(self._tpl, ctx) if isinstance(ctx, Scope)
                      else _evaluate(self._tpl, ctx))
        except (TemplateError, *_FAILURES) as e:
            raise ExprError(f"expression {_brief(self.source)}: {_why(e)}") from None
        if isinstance(result, Undefined):
            raise ExprError(f"expression {_brief(self.source)} is undefined")
        return result


class Text:
    """A compiled sandboxed explanation/summary template."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._tpl = _compile_template(source)
        except (TemplateError, *_FAILURES) as e:
            raise ExprError(f"invalid template: {_why(e)}") from None

    def render(self, ctx: Mapping[str, Any]) -> str:
        """The text, built piece by piece so it stops as soon as it would pass MAX_SIZE."""
        _Budget.reset()
        out: list[str] = []
        size = 0
        try:
            for piece in self._tpl.generate(**ctx):
                size += len(piece)
                if size > MAX_SIZE:
                    raise LimitError(f"text too large: the sandbox allows {MAX_SIZE:,} "
                                     "characters")
                out.append(piece)
        except (TemplateError, *_FAILURES) as e:
            raise ExprError(f"template: {_why(e)}") from None
        return "".join(out).strip()
