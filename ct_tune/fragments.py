"""The files that make a plan survive a reboot, rendered from Jinja2 templates.

Pure: a Plan and a few names in, {path relative to the root: text} out.  The
templates are package data (ct_tune/templates/*.j2), so a distribution can
read exactly what will be written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from ct_tune.plan import MAX_KEY, Plan

#: Sorts after the distributions' files (10-*, 50-*, 99-protect-links sorts later
#: but sets none of these keys) and before 99-sysctl.conf, the admin's own file.
DEFAULT_NAME = "99-ct-tune.conf"
SYSCTL_DIR = "etc/sysctl.d"
MODULES_LOAD = "etc/modules-load.d/ct-tune.conf"
MODPROBE = "etc/modprobe.d/ct-tune.conf"
#: Files only a plan that needs them writes: one left from an earlier plan is removed
#: (a stale hashsize= alone makes the kernel set max = 8 x hashsize at the next boot).
MODULE_FILES = (MODULES_LOAD, MODPROBE)


@dataclass(frozen=True)
class Meta:
    version: str
    profile: str
    date: str
    hostname: str | None = None
    name: str = DEFAULT_NAME


def _evidence(values: dict[str, Any]) -> str:
    """The scalar evidence on one line (nested what-if tables stay in --explain/JSON)."""
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items()
                     if v is not None and not isinstance(v, (dict, list)))


_ENV = Environment(loader=PackageLoader("ct_tune", "templates"), undefined=StrictUndefined,
                   autoescape=False, trim_blocks=True, lstrip_blocks=True,
                   keep_trailing_newline=True)
_ENV.filters["evidence"] = _evidence


def sysctl_path(meta: Meta) -> str:
    return f"{SYSCTL_DIR}/{meta.name}"


def render(plan: Plan, meta: Meta) -> dict[str, str]:
    """Every file the plan needs, by path relative to the root."""
    common = {"version": meta.version, "profile": meta.profile,
              "sysctl_path": "/" + sysctl_path(meta), "modules_load_path": "/" + MODULES_LOAD}
    files = {}
    if plan.settings:
        files[sysctl_path(meta)] = _ENV.get_template("sysctl.conf.j2").render(
            path="/" + sysctl_path(meta), date=meta.date, hostname=meta.hostname,
            settings=plan.settings, load_module=plan.load_module, builtin=plan.builtin,
            **common)
    if plan.load_module:
        files[MODULES_LOAD] = _ENV.get_template("modules-load.conf.j2").render(
            path="/" + MODULES_LOAD, **common)
    if plan.hashsize:
        files[MODPROBE] = _ENV.get_template("modprobe.conf.j2").render(
            path="/" + MODPROBE, hashsize=plan.hashsize, max=plan.value(MAX_KEY), **common)
    return files


def written_by_ct_tune(text: str | None) -> bool:
    """Whether a file carries the header every template starts with: only such a file is
    ever removed, never one an admin wrote under the same name."""
    first = (text or "").split("\n", 1)[0]
    return first.startswith("# /") and ": written by ct-tune " in first


def content(text: str | None) -> list[str]:
    """What a file does, without its comments: two files with the same content set the
    same things, so rewriting one only to refresh its header date is not a change."""
    if text is None:
        return []
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and stripped[0] not in "#;":
            out.append(" ".join(stripped.split()))
    return out
