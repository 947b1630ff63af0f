"""The facts snapshot format: versioned JSON written by ``collect``, read by ``audit --facts``.

A fleet collects on every host and one machine audits, so the file is a
contract: it carries a schema name and version, and is validated on load with
an error that names the file, the field and what is wrong.  The layout is
documented in man/ct-tune-json.5; this module is its
executable definition (SPEC).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ct_tune import safeio
from ct_tune.errors import InputError

SCHEMA_NAME = "ct-tune/facts"
SCHEMA_VERSION = 1

INT = (int,)
NUM = (int, float)
STR = (str,)
BOOL = (bool,)
NULL = (type(None),)

_SYSCTL_ENTRY = {"value": (int, str, list), "writable": BOOL}

#: Field -> allowed types, or a nested spec.  Every listed field must be present;
#: unknown fields are allowed (forward compatible within a schema version).
SPEC: dict[str, Any] = {
    "schema": STR,
    "schema_version": INT,
    "tool_version": STR,
    "collected_at": STR,
    "source": {"procfs": STR, "sysfs": STR, "live": BOOL},
    "host": {
        "hostname": STR + NULL,
        "kernel_release": STR + NULL,
        "kernel_version": (list, type(None)),
        "arch": STR + NULL,
        "pointer_size": INT + NULL,
        "cpus_online": INT + NULL,
        "mem_total_bytes": INT + NULL,
        "low_total_bytes": INT + NULL,
        "uptime_seconds": INT + NULL,
    },
    "conntrack": {
        "loaded": BOOL,
        "initial_netns": BOOL + NULL,
        "hashsize_param": INT + NULL,
        "slab_object_size": INT + NULL,
        "slab_object_size_source": STR + NULL,
    },
    "sysctl": ("mapping", _SYSCTL_ENTRY),
    "flows": ("optional", ("nullable", {
        "source": STR, "entries_read": INT, "entries_estimated": INT, "sampled": BOOL,
        "malformed": INT, "by_l3": (dict,), "by_l4": (dict,), "by_flag": (dict,),
        "top_dports": (list,), "classes": (dict,),
    })),
    "window": ("optional", {"seconds": NUM, "polls": INT, "peak": INT + NULL,
                            "mean": NUM + NULL, "growth": INT + NULL, "rates": (dict,)}),
    # boot configuration (sysctl.d, modules-load.d, modprobe.d); optional so that
    # snapshots from before it was collected still load
    "persist": ("optional", {"root": STR, "files": (list,), "assignments": (list,),
                             "sysctl": (dict,), "early_load": (list,), "modprobe": (dict,),
                             "udev_sysctl_rules": (list,)}),
    # other writers of the keys and the boot system (ct_tune.writers); optional so that
    # snapshots from before it was collected still load
    "writers": ("optional", {
        "kube_proxy": ("nullable", {
            "pid": INT + NULL, "source": STR, "argv0": STR,
            # conntrack settings by KubeProxyConfiguration field name: int or null
            "flags": ("mapping", INT + NULL),
            "config_file": STR + NULL, "config_read_from": STR + NULL,
            "config": ("nullable", ("mapping", INT + NULL)), "version": STR + NULL,
            "version_source": STR + NULL}),
        "init": STR + NULL, "init_evidence": (list,),
        "distro": ("nullable", {"id": STR + NULL, "name": STR + NULL, "version": STR + NULL,
                                "source": STR}),
        "containers": {"in_container": BOOL, "evidence": (list,)},
        "modules_d": (list,), "pids_scanned": INT, "pids_truncated": BOOL,
    }),
    "stat": (
        "nullable",
        {"source": STR, "columns": (list,), "cpus": INT, "entries": INT, "counters": (dict,)},
    ),
}

_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean",
               list: "list", dict: "object", type(None): "null"}


def _describe(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _check(value: Any, spec: Any, where: str, path: str) -> None:
    def fail(problem: str) -> None:
        raise InputError(path, problem, item=where)

    if isinstance(spec, tuple) and spec and spec[0] == "optional":
        _check(value, spec[1], where, path)
        return
    if isinstance(spec, tuple) and spec and spec[0] == "nullable":
        if value is not None:
            _check(value, spec[1], where, path)
        return
    if isinstance(spec, tuple) and spec and spec[0] == "mapping":
        if not isinstance(value, dict):
            fail(f"expected an object, found {type(value).__name__}")
        for key, item in value.items():
            _check(item, spec[1], f"{where}.{key}", path)
        return
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            fail(f"expected an object, found {_TYPE_NAMES.get(type(value), type(value).__name__)}")
        for key, sub in spec.items():
            if key not in value and isinstance(sub, tuple) and sub and sub[0] == "optional":
                continue
            if key not in value:
                fail(f"missing field {key!r}")
            _check(value[key], sub, f"{where}.{key}" if where else key, path)
        return
    # bool is an int subclass in Python: only accept it where booleans are meant.
    ok = isinstance(value, spec) and not (isinstance(value, bool) and bool not in spec)
    if not ok:
        shown = json.dumps(value)[:40]
        fail(f"expected {_describe(spec)}, found {shown}")


def validate(data: Any, path: str) -> dict[str, Any]:
    """Check a decoded snapshot against SPEC and the schema version; return it."""
    if not isinstance(data, dict):
        raise InputError(path, "not a ct-tune facts snapshot (expected a JSON object)")
    if data.get("schema") != SCHEMA_NAME:
        raise InputError(path, f"not a ct-tune facts snapshot (schema is {data.get('schema')!r},"
                               f" expected {SCHEMA_NAME!r})")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(path, f"facts schema_version {version!r} is not supported by this "
                               f"ct-tune (reads version {SCHEMA_VERSION}); re-collect or upgrade")
    _check(data, SPEC, "", path)
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
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(name, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
                         ) from None
    return validate(data, name)


def dumps(facts: dict[str, Any]) -> str:
    """Serialize a snapshot: stable key order so snapshots diff cleanly."""
    return json.dumps(facts, indent=2, sort_keys=True) + "\n"
