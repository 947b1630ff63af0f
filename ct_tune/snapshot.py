"""The facts snapshot format: versioned JSON written by ``collect``, read by ``audit --facts``.

A fleet collects on every host and one machine audits, so the file is a
contract: it carries a schema name and version, and is validated on load with
an error that names the file, the field and what is wrong.  The layout is
documented in man/ct-tune-json.5; this module is its
executable definition (SPEC).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ct_tune import safeio
from ct_tune.errors import InputError, InputErrors
from ct_tune.sysctlkeys import spec as key_spec

SCHEMA_NAME = "ct-tune/facts"
#: 2 added errors[] and null sysctl values (a value that could not be read); 1 is read too
SCHEMA_VERSION = 2
READS_VERSIONS = (1, 2)

INT = (int,)
NUM = (int, float)
STR = (str,)
BOOL = (bool,)
NULL = (type(None),)

#: the largest magnitude of any integer in a snapshot: nothing ct-tune reads is wider than
#: 64 bits, and the formulas must never see numbers that take seconds to multiply
INT_LIMIT = 2**63 - 1
#: digits of a JSON integer ct-tune decodes at all (Python refuses int() of 4300)
_MAX_DIGITS = 30
#: idle histogram bins (flows.IDLE_BINS) plus the bin a timeout itself falls in
_MAX_BINS = 1025
_MAX_PORT_BINS = 64


def U(low: int = 0, high: int = INT_LIMIT) -> tuple[Any, ...]:
    """An integer in low..high."""
    return ("int", low, high)


def LIST(item: Any, most: int = 1 << 20) -> tuple[Any, ...]:
    return ("list", item, most)


def MAP(item: Any, key: str | None = None) -> tuple[Any, ...]:
    """An object of any keys (matching the regular expression `key`, when given)."""
    return ("mapping", item, re.compile(key) if key else None)


def NULLABLE(sub: Any) -> tuple[Any, ...]:
    return ("nullable", sub)


def OPTIONAL(sub: Any) -> tuple[Any, ...]:
    return ("optional", sub)


#: sysctl values: an integer key (sysctlkeys.spec) holds an integer or null (not read);
#: other keys an integer, a list of integers (multi-field files) or the text
_SYSCTL_ENTRY = {"value": ("sysctl-value",), "writable": BOOL}

_FLOW_CLASS = {
    "entries": U(), "timeout_key": STR, "timeout": U(0, 2**31 - 1),
    "idle_bin_seconds": U(1, 2**31 - 1),
    "idle_histogram": MAP(U(), r"[0-9]{1,4}"),
    "idle_ports": LIST(MAP(U(), r"[0-9]{1,5}"), _MAX_PORT_BINS),
}

#: Field -> allowed types, or a nested spec.  Every listed field must be present unless
#: OPTIONAL; unknown fields are allowed (forward compatible within a schema version).
#: Every field the engine, the rules' helpers and the planner read is typed here, so a
#: snapshot that loads can never fail inside them.
SPEC: dict[str, Any] = {
    "schema": STR,
    "schema_version": INT,
    "tool_version": STR,
    "collected_at": STR,
    "source": {"procfs": STR, "sysfs": STR, "live": BOOL},
    "host": {
        "hostname": STR + NULL,
        "kernel_release": STR + NULL,
        "kernel_version": NULLABLE(LIST(U(0, 99999), 3)),
        "arch": STR + NULL,
        "pointer_size": NULLABLE(U(1, 16)),
        "cpus_online": NULLABLE(U(1, 1 << 16)),
        "mem_total_bytes": NULLABLE(U(1)),
        "low_total_bytes": NULLABLE(U(1)),
        "uptime_seconds": NULLABLE(U()),
    },
    "conntrack": {
        "loaded": BOOL,
        "builtin": OPTIONAL(BOOL + NULL),
        "initial_netns": BOOL + NULL,
        "hashsize_param": NULLABLE(U(0, 2**32 - 1)),
        "slab_object_size": NULLABLE(U(1, 1 << 20)),
        "slab_object_size_source": STR + NULL,
    },
    "sysctl": MAP(_SYSCTL_ENTRY),
    "flows": OPTIONAL(NULLABLE({
        "source": STR, "entries_read": U(), "entries_estimated": U(), "sampled": BOOL,
        "malformed": U(), "by_l3": MAP(U()), "by_l4": MAP(U()), "by_flag": MAP(U()),
        "top_dports": LIST(LIST(U(), 2)), "classes": MAP(_FLOW_CLASS),
        # lines read, of which every k-th was parsed (older snapshots: every line)
        "lines_read": OPTIONAL(U()), "every": OPTIONAL(U(1)),
        # 0.1 before the line sample: ports and addresses from every detail_every-th entry
        "detail_every": OPTIONAL(U(1)), "detail_entries": OPTIONAL(U()),
    })),
    # this namespace's TCP sockets in the states that explain CLOSE_WAIT entries
    # (ct_tune/sockets.py), read with the table sample; optional for older snapshots
    "sockets": OPTIONAL(NULLABLE({"close_wait": U(), "fin_wait2": U(),
                                  "sources": LIST(STR, 2)})),
    "window": OPTIONAL(NULLABLE({
        "seconds": NUM, "polls": U(), "peak": NULLABLE(U()), "mean": NUM + NULL,
        "growth": INT + NULL, "rates": MAP(NUM),
        # the polls, [seconds since the start, count] (added in 0.1; older snapshots lack it)
        "series": OPTIONAL(LIST(LIST(NUM, 2), 100_000)),
        # readings polling threw away (added in 0.1; older snapshots lack it)
        "discarded": OPTIONAL({"count": U(), "counters": U(), "problems": LIST(STR, 10)}),
        "namespaces": OPTIONAL(NULLABLE({"seconds": NUM, "list": LIST({
            "netns": STR, "pid": U(), "names": LIST(STR, 64), "peak": U(),
            "drop_per_s": NUM, "early_drop_per_s": NUM, "insert_failed_per_s": NUM},
            64)}))})),
    # the other network namespaces' tables (ct_tune.nsview); optional for older snapshots
    "namespaces": OPTIONAL(NULLABLE({
        "own": STR, "pids": U(), "seen": U(), "truncated": BOOL,
        "list": LIST({"netns": STR, "pid": U(), "names": LIST(STR, 64), "source": STR,
                      "entries": U(), "drop": U(), "early_drop": U(),
                      "insert_failed": U()}, 64)})),
    # boot configuration (sysctl.d, modules-load.d, modprobe.d); optional so that
    # snapshots from before it was collected still load
    "persist": OPTIONAL(NULLABLE({
        "root": STR, "files": LIST(STR), "links": OPTIONAL(MAP(STR)),
        "assignments": LIST({"key": STR, "value": STR, "file": STR, "line": U(),
                             "optional": OPTIONAL(BOOL)}),
        "sysctl": MAP({"value": STR, "file": STR, "line": U()}),
        "early_load": LIST({"module": STR, "file": STR}),
        "modprobe": MAP({"value": STR, "file": STR}),
        "udev_sysctl_rules": LIST(STR)})),
    # other writers of the keys and the boot system (ct_tune.writers); optional so that
    # snapshots from before it was collected still load
    "writers": OPTIONAL({
        "kube_proxy": NULLABLE({
            "pid": INT + NULL, "source": STR, "argv0": STR,
            # conntrack settings by KubeProxyConfiguration field name: int or null
            "flags": MAP(INT + NULL),
            "config_file": STR + NULL, "config_read_from": STR + NULL,
            "config": NULLABLE(MAP(INT + NULL)), "version": STR + NULL,
            "version_source": STR + NULL}),
        "init": STR + NULL, "init_evidence": (list,),
        "distro": NULLABLE({"id": STR + NULL, "name": STR + NULL, "version": STR + NULL,
                            "source": STR}),
        "containers": {"in_container": BOOL, "evidence": (list,)},
        "modules_d": (list,), "pids_scanned": INT, "pids_truncated": BOOL,
    }),
    "stat": NULLABLE(
        {"source": STR, "columns": LIST(STR), "cpus": U(), "entries": U(),
         "counters": MAP(U())},
    ),
    # input problems found while collecting (facts.Problems); optional for older snapshots
    "errors": OPTIONAL(LIST({"path": STR, "problem": STR, "item": OPTIONAL(STR + NULL),
                             "facts": LIST(LIST(STR, 8), 8)})),
}

_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean",
               list: "list", dict: "object", type(None): "null"}


class _Huge(str):
    """A JSON integer too long to be any fact (decoded as this, then reported by field)."""


def _parse_int(text: str) -> int | _Huge:
    return _Huge(text) if len(text.lstrip("-")) > _MAX_DIGITS else int(text)


def _describe(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _show(value: Any) -> str:
    """What was found, in a few words, without walking a deep or huge value."""
    if isinstance(value, _Huge):
        return f"a number of {len(value.lstrip('-'))} digits"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_field(name: str, value: Any, out: list[tuple[str, str]]) -> None:
    """Check one top-level field of a snapshot on its own (a capture's copy of it)."""
    _check(value, SPEC[name], name, out)


def _check(value: Any, spec: Any, where: str, out: list[tuple[str, str]]) -> None:
    """Append (field path, problem) for everything wrong in value, not just the first.

    Dispatched in the order the specs are most common in (an object, a type, an integer
    range): a fleet report checks thousands of snapshots."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            out.append((where, f"expected an object, found {_show(value)}"))
            return
        for key, sub in spec.items():
            if key not in value:
                if not (isinstance(sub, tuple) and sub and sub[0] == "optional"):
                    out.append((where, f"missing field {key!r}"))
                continue
            _check(value[key], sub, f"{where}.{key}" if where else key, out)
        return
    kind = spec[0] if spec and isinstance(spec[0], str) else None
    if kind is None:
        # a tuple of types; bool is an int subclass in Python: only accept it where
        # booleans are meant
        if type(value) is str and str in spec:
            return
        ok = isinstance(value, spec) and not (isinstance(value, bool) and bool not in spec)
        if not ok:
            out.append((where, f"expected {_describe(spec)}, found {_show(value)}"))
        elif isinstance(value, float) and not math.isfinite(value):
            out.append((where, f"expected a finite number, found {value}"))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
            out.append((where, f"{value} is beyond 64 bits"))
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            out.append((where, f"expected integer, found {_show(value)}"))
        elif not spec[1] <= value <= spec[2]:
            out.append((where, f"{value} is outside {spec[1]}..{spec[2]}"))
    elif kind == "sysctl-value":
        _check_sysctl_value(value, where, out)
    elif kind == "optional":
        _check(value, spec[1], where, out)
    elif kind == "nullable":
        sub = spec[1]
        if value is None:
            return
        not_int = isinstance(value, bool) or not isinstance(value, int)
        if isinstance(sub, tuple) and sub[0] == "int" and not_int:
            out.append((where, f"expected integer or null, found {_show(value)}"))
        else:
            _check(value, sub, where, out)
    elif kind == "mapping":
        if not isinstance(value, dict):
            out.append((where, f"expected an object, found {_show(value)}"))
            return
        for key, item in value.items():
            if spec[2] is not None and not spec[2].fullmatch(key):
                out.append((f"{where}.{key}" if where else key, "not a valid key here"))
                continue
            _check(item, spec[1], f"{where}.{key}", out)
    elif kind == "list":
        if not isinstance(value, list):
            out.append((where, f"expected a list, found {_show(value)}"))
            return
        if len(value) > spec[2]:
            out.append((where, f"more than {spec[2]} items"))
            return
        for n, item in enumerate(value):
            _check(item, spec[1], f"{where}[{n}]", out)


def _check_sysctl_value(value: Any, where: str, out: list[tuple[str, str]]) -> None:
    key = where[len("sysctl."):-len(".value")]
    if value is None or (isinstance(value, str) and key_spec(key) is None):
        return
    if key_spec(key) is not None:
        _check(value, U(-INT_LIMIT, INT_LIMIT), where, out)
    elif isinstance(value, list):
        _check(value, LIST(U(-INT_LIMIT, INT_LIMIT)), where, out)
    else:
        _check(value, U(-INT_LIMIT, INT_LIMIT), where, out)


def _flow_bins(data: dict[str, Any], out: list[tuple[str, str]]) -> None:
    """The histogram of a class covers its timeout in at most _MAX_BINS bins (what-if
    arithmetic walks them)."""
    flows = data.get("flows")
    for name, cls in ((flows or {}).get("classes") or {}).items():
        if cls["timeout"] // cls["idle_bin_seconds"] >= _MAX_BINS:
            out.append((f"flows.classes.{name}", "idle_bin_seconds is too small for its "
                        f"timeout (more than {_MAX_BINS} bins)"))


def _degrade_ranges(data: dict[str, Any], path: str) -> None:
    """Out-of-range values of known integer keys become errors and missing values, as
    when read from procfs: corrupt input, not a fact the rules may act on."""
    errors = data.setdefault("errors", [])
    for key, entry in data["sysctl"].items():
        keyspec = key_spec(key)
        value = entry["value"]
        if keyspec is None or value is None:
            continue
        problem = keyspec.read_problem(value)
        if problem:
            errors.append({"path": path, "item": f"sysctl.{key}.value", "problem": problem,
                           "facts": [["sysctl", key]]})
            entry["value"] = None


def validate(data: Any, path: str) -> dict[str, Any]:
    """Check a decoded snapshot against SPEC and the schema version; return it.

    Every problem is reported (InputErrors), each naming the field; out-of-range values
    of known sysctl keys are not fatal: they go to data["errors"] and read as missing.
    """
    if not isinstance(data, dict):
        raise InputError(path, "not a ct-tune facts snapshot (expected a JSON object)")
    if data.get("schema") != SCHEMA_NAME:
        raise InputError(path, f"not a ct-tune facts snapshot (schema is "
                               f"{_show(data.get('schema'))}, expected {SCHEMA_NAME!r})")
    version = data.get("schema_version")
    if version not in READS_VERSIONS or isinstance(version, bool):
        raise InputError(path, f"facts schema_version {_show(version)} is not supported by "
                               f"this ct-tune (reads versions 1 and {SCHEMA_VERSION}); "
                               "re-collect or upgrade")
    problems: list[tuple[str, str]] = []
    _check(data, SPEC, "", problems)
    if not problems:
        _flow_bins(data, problems)
    if problems:
        from ct_tune.findings import one_line  # not on collect's path, which only dumps

        raise InputErrors([InputError(path, one_line(problem), item=one_line(where) or None)
                           for where, problem in problems])
    _degrade_ranges(data, path)
    return data


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a snapshot file ('-' is standard input)."""
    name = str(path)
    if name == "-":
        import sys

        # A pipe is what '-' is for: stdin is not checked for a regular file, only bounded.
        text = safeio.decode(safeio.read_stream(sys.stdin.buffer, name, safeio.SNAPSHOT), name)
    else:
        text = safeio.read_text(path, safeio.SNAPSHOT) or ""
    try:
        data = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise InputError(name, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
                         ) from None
    except RecursionError:
        raise InputError(name, "invalid snapshot: nested too deeply") from None
    except ValueError as e:  # a number Python will not convert (e.g. a 1e400000 exponent)
        raise InputError(name, f"invalid JSON: {e}") from None
    return validate(data, name)


def dumps(facts: dict[str, Any]) -> str:
    """Serialize a snapshot: stable key order so snapshots diff cleanly."""
    return json.dumps(facts, indent=2, sort_keys=True) + "\n"
