# -*- coding: utf-8 -*-
# Copyright: ct-tune maintainers
# MIT License (see the ct-tune project)
"""Shared by the ct_tune.conntrack modules: find the installed ct-tune, map module options
to its command line, run it and read its JSON (man ct-tune-json(5)).

The option -> argument functions are pure (no Ansible import), so they are unit-tested
without Ansible; the modules run on the target with its Python and the standard library.
"""

from __future__ import annotations

import json
import os

PACKAGE_HINT = ("install it on the target with 'pip install ct-tune' (or point the "
                "'executable' option at it)")

#: audit statuses, least to most urgent (ct-tune's precedence: critical > warning >
#: unknown > ok)
STATUS_ORDER = ("ok", "unknown", "warning", "critical")

#: argument specs of the options doc_fragments/cttune.py documents once
HOST_ARGS = dict(
    sample=dict(type="bool", default=True),
    sample_limit=dict(type="int"),
    procfs=dict(type="path"),
    sysfs=dict(type="path"),
    executable=dict(type="path"),
)
RULES_ARGS = dict(
    profile=dict(type="str", default="default"),
    rules_dirs=dict(type="list", elements="path", default=[]),
    builtin_rules=dict(type="bool", default=True),
)


def _common(params):
    """--procfs/--sysfs/--rules-dir, shared by audit, apply and collect."""
    args = []
    if params.get("procfs"):
        args += ["--procfs", params["procfs"]]
    if params.get("sysfs"):
        args += ["--sysfs", params["sysfs"]]
    for d in params.get("rules_dirs") or []:
        args += ["--rules-dir", d]
    if params.get("builtin_rules") is False:
        args.append("--no-builtin-rules")
    return args


def _sample(params):
    args = []
    if params.get("sample") is False:
        args.append("--no-sample")
    if params.get("sample_limit"):
        args += ["--sample-limit", str(params["sample_limit"])]
    return args


def audit_args(params):
    """ct-tune audit --format json with the audit module's options."""
    args = ["audit", "--format", "json", "--profile", params.get("profile") or "default"]
    args += _common(params)
    if params.get("root"):
        args += ["--root", params["root"]]
    if params.get("facts"):
        args += ["--facts", params["facts"]]
    return args + _sample(params)


def apply_args(params, check_mode):
    """ct-tune apply (state=present) or rollback (state=rolled_back) --format json; check
    mode is --dry-run, which changes nothing and predicts 'changed' exactly."""
    if params.get("state") == "rolled_back":
        args = ["rollback", "--format", "json"]
        if params.get("root"):
            args += ["--root", params["root"]]
        if params.get("procfs"):
            args += ["--procfs", params["procfs"]]
    else:
        args = ["apply", "--format", "json", "--profile", params.get("profile") or "default"]
        args += _common(params)
        if params.get("root"):
            args += ["--root", params["root"]]
        if params.get("live") is False:
            args.append("--no-live")
        if params.get("allow_lower"):
            args.append("--allow-lower")
        if params.get("name"):
            args += ["--name", params["name"]]
        args += _sample(params)
    if params.get("lock_wait") is not None:
        args += ["--lock-wait", _number(params["lock_wait"])]
    if check_mode:
        args.append("--dry-run")
    return args


def collect_args(params, output):
    """ct-tune collect -o OUTPUT."""
    args = ["collect", "-o", output]
    if params.get("procfs"):
        args += ["--procfs", params["procfs"]]
    if params.get("sysfs"):
        args += ["--sysfs", params["sysfs"]]
    return args + _sample(params)


def _number(value):
    return f"{int(value)}" if float(value).is_integer() else repr(float(value))


def status_at_least(status, level):
    """Whether an audit status is at least as urgent as level (fail_on)."""
    if level in (None, "none") or status not in STATUS_ORDER:
        return False
    return STATUS_ORDER.index(status) >= STATUS_ORDER.index(level)


def facts_summary(report):
    """The facts a playbook branches on, from an audit report's facts."""
    facts = report.get("facts") or {}
    host = facts.get("host") or {}
    conntrack = facts.get("conntrack") or {}
    sysctl = facts.get("sysctl") or {}

    def value(key):
        entry = sysctl.get(key)
        return entry.get("value") if isinstance(entry, dict) else None

    count = value("net.netfilter.nf_conntrack_count")
    maximum = value("net.netfilter.nf_conntrack_max")
    usage = None
    if isinstance(count, int) and isinstance(maximum, int) and maximum > 0:
        usage = round(float(count) / maximum, 6)
    return {
        "hostname": host.get("hostname"),
        "kernel": host.get("kernel_release"),
        "cpus": host.get("cpus_online"),
        "mem_total_bytes": host.get("mem_total_bytes"),
        "loaded": conntrack.get("loaded"),
        "initial_netns": conntrack.get("initial_netns"),
        "count": count,
        "max": maximum,
        "usage": usage,
        "buckets": value("net.netfilter.nf_conntrack_buckets"),
        "collected_at": facts.get("collected_at"),
    }


def diff_of(doc):
    """Ansible's diff (a list of before/after/headers) of an apply report: each file that
    changes, and the live values as 'key = value' lines."""
    out = []
    for f in doc.get("files") or []:
        if f.get("action") == "unchanged":
            continue
        out.append({
            "before_header": f["path"] + ("" if f.get("before") is not None else " (absent)"),
            "after_header": f["path"] + ("" if f.get("after") is not None else " (removed)"),
            "before": f.get("before") or "",
            "after": f.get("after") or "",
        })
    live = [v for v in doc.get("live_values") or [] if v.get("changed")]
    if live:
        out.append({
            "before_header": f"live values ({doc.get('procfs')}/sys)",
            "after_header": f"live values ({doc.get('procfs')}/sys)",
            "before": "".join(f"{v['key']} = {v['before']}\n" for v in live),
            "after": "".join(f"{v['key']} = {v['after']}\n" for v in live),
        })
    return out


def find_ct_tune(module):
    """The ct-tune to run: the executable option, else ct-tune on PATH; a clear failure
    naming the package when there is none."""
    exe = module.params.get("executable")
    if exe:
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            module.fail_json(msg=f"ct-tune executable {exe} does not exist or is not "
                                 f"executable: {PACKAGE_HINT}", reason="not-installed")
        return exe
    found = module.get_bin_path("ct-tune", required=False)
    if not found:
        module.fail_json(msg="ct-tune is not installed on this host (not found on PATH): "
                             f"{PACKAGE_HINT}", reason="not-installed")
    return found


def run_json(module, exe, args):
    """Run ct-tune; (rc, parsed JSON or None, stdout, stderr)."""
    rc, out, err = module.run_command([exe, *args],
                                      environ_update={"LC_ALL": "C.UTF-8"})
    try:
        doc = json.loads(out) if out.strip() else None
    except ValueError:
        doc = None
    return rc, doc, out, err
