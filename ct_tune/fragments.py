"""The files that make a plan survive a reboot, rendered from Jinja2 templates.

Pure: a Plan and a few names in, {path relative to the root: text} out.  The
templates are package data (ct_tune/templates/*.j2), so a distribution can
read exactly what will be written.

Only settings become lines of their own.  Every other text in these files (rule
summaries and sources, a profile's reason, the host name, the file name) comes
from files ct-tune does not own, so the templates print each through the
``comment`` / ``oneline`` filters, which escape every line break; and before
anything is returned each file is checked once more line by line: a line that is
neither a comment nor one of the settings the plan holds is a bug, raised, never
written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from ct_tune.errors import CtTuneError, InputError
from ct_tune.oneline import comment, one_line
from ct_tune.plan import MAX_KEY, Plan, write_problem

#: Sorts after the distributions' files (10-*, 50-*, 99-protect-links sorts later
#: but sets none of these keys) and before 99-sysctl.conf, the admin's own file.
DEFAULT_NAME = "99-ct-tune.conf"
SYSCTL_DIR = "etc/sysctl.d"
MODULES_LOAD = "etc/modules-load.d/ct-tune.conf"
MODPROBE = "etc/modprobe.d/ct-tune.conf"
#: Files only a plan that needs them writes: one left from an earlier plan is removed
#: (a stale hashsize= alone makes the kernel set max = 8 x hashsize at the next boot).
MODULE_FILES = (MODULES_LOAD, MODPROBE)
#: a file name systemd-sysctl reads (sysctl.d(5): *.conf) that needs no quoting anywhere
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,250}\.conf")
_SETTING = re.compile(r"([a-z0-9_.]+) = (-?[0-9]+)")
_HASHSIZE = re.compile(r"options nf_conntrack hashsize=([0-9]+)")


class FragmentError(CtTuneError):
    """A rendered file holds a line that is not one of the plan's settings (a bug)."""


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
_ENV.filters["comment"] = comment
_ENV.filters["oneline"] = one_line


def sysctl_path(meta: Meta) -> str:
    return f"{SYSCTL_DIR}/{meta.name}"


def _check_plan(plan: Plan) -> None:
    """Refuse to render a key or value the plan should never have held."""
    for s in plan.settings:
        problem = write_problem(s.key, s.value)
        if problem:
            raise FragmentError(f"refusing to write {one_line(s.key)}: {problem}")
    if plan.hashsize is not None:
        problem = write_problem("net.netfilter.nf_conntrack_buckets", plan.hashsize)
        if problem:
            raise FragmentError(f"refusing to write hashsize={plan.hashsize!r}: {problem}")


def _check_lines(path: str, text: str, plan: Plan) -> None:
    """Every line of a rendered file is blank, a comment, or one the plan asked for,
    split as str.splitlines() splits (every line break any reader may honour)."""
    wanted = {(s.key, s.value) for s in plan.settings}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if path == MODULES_LOAD and line == "nf_conntrack" and plan.load_module:
            continue
        m = _HASHSIZE.fullmatch(line)
        if path == MODPROBE and m and int(m.group(1)) == plan.hashsize:
            continue
        m = _SETTING.fullmatch(line)
        if path.startswith(SYSCTL_DIR + "/") and m and (m.group(1), int(m.group(2))) in wanted:
            continue
        raise FragmentError(f"refusing to write /{path}: unexpected line {one_line(line)!r}")


def render(plan: Plan, meta: Meta) -> dict[str, str]:
    """Every file the plan needs, by path relative to the root."""
    if not NAME_RE.fullmatch(meta.name):
        raise InputError("--name", f"{meta.name!r} is not a sysctl.d file name: letters, "
                         "digits, '.', '_' and '-', ending in .conf")
    _check_plan(plan)
    common = {"version": meta.version, "profile": meta.profile,
              "sysctl_path": "/" + sysctl_path(meta), "modules_load_path": "/" + MODULES_LOAD}
    files = {}
    if plan.settings:
        files[sysctl_path(meta)] = _ENV.get_template("sysctl.conf.j2").render(
            path="/" + sysctl_path(meta), date=meta.date, hostname=meta.hostname,
            settings=plan.settings, load_module=plan.load_module, builtin=plan.builtin,
            applier=plan.applier, order=plan.order, **common)
    if plan.load_module:
        files[MODULES_LOAD] = _ENV.get_template("modules-load.conf.j2").render(
            path="/" + MODULES_LOAD, **common)
    if plan.hashsize:
        files[MODPROBE] = _ENV.get_template("modprobe.conf.j2").render(
            path="/" + MODPROBE, hashsize=plan.hashsize, max=plan.value(MAX_KEY), **common)
    for path, text in files.items():
        _check_lines(path, text, plan)
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
