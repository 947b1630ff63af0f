"""Turn findings into what people and programs read: table, explanation, JSON.

Pure functions from data to text; cli.py decides where the text goes.  The
JSON layout is a documented contract (man/ct-tune-json.5, REPORT_SCHEMA_VERSION).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ct_tune import termtable, units
from ct_tune.findings import Finding, error_text

#: 2: status and severity "unknown", errors[], findings[].unavailable (man/ct-tune-json.5)
REPORT_SCHEMA_VERSION = 2


def _fmt_value(parameter: str | None, value: Any) -> str:
    return units.value(parameter, value)


def by_severity(findings: list[Finding]) -> list[Finding]:
    """Worst first: problems (critical, warning, unknown), then info, then ok."""
    return termtable.ordered(findings)


def explain(findings: list[Finding], units_of: Mapping[str, Mapping[str, str]] | None = None,
            width: int | None = None) -> str:
    """Per finding: the summary, then the arithmetic and evidence behind it, then sources.

    Evidence reads like the table: each value in the unit its rule declares (units_of:
    rule id -> evidence name -> unit), numbers with separators, and values the host did
    not provide (null: not sampled, no kube-proxy) left out.  Given a width, every line
    is wrapped to it (a word longer than the width, such as a long URL, is broken)."""
    blocks = []
    for f in by_severity(findings):
        head = f"[{f.severity.upper()}] {f.rule}: {f.title}"
        lines = [head, "=" * min(len(head), width or len(head))]
        if f.parameter:
            change = (f"{_fmt_value(f.parameter, f.current)} -> "
                      f"{_fmt_value(f.parameter, f.recommended)}") if f.changes else (
                      f"{_fmt_value(f.parameter, f.current)} (keep)")
            if f.severity == "unknown":
                change = f"{_fmt_value(f.parameter, f.current)} (not assessed)"
            lines.append(f"{f.parameter}: {change}")
            if f.scope == "host":
                lines.append("scope: read-only in this network namespace; set it on the host")
            elif f.scope == "module":
                lines.append("scope: read-only on this kernel; set through the module parameter")
        lines += [f.summary, "", f.explanation]
        given = {k: v for k, v in f.evidence.items() if v is not None}
        if given:
            rule_units = (units_of or {}).get(f.rule, {})
            lines += ["", "evidence:"]
            lines += [f"  {k} = {units.with_unit(v, rule_units.get(k))}"
                      for k, v in given.items()]
        lines += ["", "sources:"] + [f"  - {s}" for s in f.sources]
        lines.append(f"rule file: {f.rule_file}")
        if width:
            lines = [w for line in "\n".join(lines).split("\n")
                     for w in termtable.wrap_hanging(line, width)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def audit_text(findings: list[Finding], facts: dict[str, Any], status: str, profile: str,
               style: termtable.Style, show_all: bool = False,
               units_of: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The audit for a person: the table (or, given units_of, the explanation of every
    finding), the polling window's sparkline, and the summary line last."""
    if units_of is not None:
        body = explain(findings, units_of, style.prose)
        show_all = True
    else:
        body = termtable.table(findings, style, show_all)
    parts = [body] if body else []
    spark = termtable.window_line(facts.get("window"), style)
    if spark:
        parts.append(spark)
    parts.append(termtable.summary(findings, facts, status, profile, style, show_all))
    return "\n\n".join(parts)


def report(findings: list[Finding], facts: dict[str, Any], status: str,
           profile: str) -> dict[str, Any]:
    """The --format json document (man/ct-tune-json.5)."""
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "status": status,
        "profile": profile,
        "findings": [f.to_json() for f in findings],
        # every input problem, "PATH: [FIELD: ]what is wrong", as on stderr
        "errors": error_lines(facts),
        "facts": facts,
    }


def error_lines(facts: dict[str, Any]) -> list[str]:
    """The facts' input problems as the one-line messages the CLI prints."""
    return [error_text(err) for err in facts.get("errors") or []]


def _diff(rel: str, old: str | None, new: str | None) -> str:
    import difflib

    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
        fromfile="/dev/null" if old is None else f"a/{rel}",
        tofile="/dev/null" if new is None else f"b/{rel}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def changes(ch: Any, skips: Any, root: Any, dry_run: bool, verb: str = "apply") -> str:
    """What an apply (or rollback) changes: file diffs, live values, skipped keys."""
    from tabulate import tabulate

    out = []
    would = "would " if dry_run else ""
    for f in ch.files:
        out.append(f"{f.action} {str(root).rstrip('/')}/{f.rel}:")
        out.append(_diff(f.rel, f.old, f.new).rstrip("\n"))
    if ch.live:
        rows = [[c.key, c.old, c.new] for c in ch.live]
        out.append(f"live values ({would}write, read back; in this order):")
        out.append(tabulate(rows, headers=["key", "current", "new"], disable_numparse=True))
    unchanged = []
    if ch.unchanged_files:
        unchanged.append(f"{len(ch.unchanged_files)} file(s) already say the same")
    if ch.unchanged_live:
        unchanged.append(f"{len(ch.unchanged_live)} live value(s) already as planned")
    if unchanged:
        out.append("unchanged: " + "; ".join(unchanged))
    for s in skips:
        out.append(f"skipped {s.key} ({_fmt_value(s.key, s.current)} -> "
                   f"{_fmt_value(s.key, s.recommended)}): {s.reason}")
    if ch.empty:
        out.append(f"nothing to {verb}: every file and live value is already as planned"
                   if verb == "apply" else "nothing to restore: files and live values already "
                   "match the saved state")
    elif dry_run:
        out.append(f"dry run: nothing was changed ({len(ch.files)} file(s) and "
                   f"{len(ch.live)} live value(s) would change)")
    return "\n".join(out)


#: Namespaced sysctls Kubernetes treats as safe (pkg/kubelet/sysctl/safe_sysctls.go; the
#: keepalive keys since 1.29): every other one, net.netfilter.* included, is "unsafe" and
#: a pod may set it only on nodes whose kubelet allows it (--allowed-unsafe-sysctls).
K8S_SAFE_SYSCTLS = frozenset({"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_keepalive_intvl",
                              "net.ipv4.tcp_keepalive_probes"})


def live_only_note(settings: Any) -> str:
    """Why apply wrote no file in a non-initial network namespace, and where such values
    persist instead: the pod, the container or the CNI network that creates the namespace
    (each sets namespaced net.* sysctls in the new namespace before the workload starts)."""
    pairs = [(s.key, str(s.value)) for s in settings]
    out = ["not persisted: this is not the initial network namespace (a container, a pod or "
           "'ip netns exec'). Boot applies /etc/sysctl.d to the host's initial namespace, "
           "never to this one, so ct-tune wrote live values only (--root DIR writes the files "
           "anyway). A new namespace starts from the kernel defaults: set these where it is "
           "created:"]
    if not pairs:
        return out[0].split(". Boot")[0] + ": live values only, and none to set"
    unsafe = sorted(k for k, _ in pairs if k not in K8S_SAFE_SYSCTLS)
    out.append("- Kubernetes pod spec:\n    securityContext:\n      sysctls:")
    out += [f"      - name: {k}\n        value: \"{v}\"" for k, v in pairs]
    if unsafe:
        out.append(f"  {', '.join(unsafe)} {'is an' if len(unsafe) == 1 else 'are'} unsafe "
                   "sysctl" + ("" if len(unsafe) == 1 else "s") + " in Kubernetes: the node's "
                   "kubelet must allow them (--allowed-unsafe-sysctls 'net.netfilter.*', or "
                   "allowedUnsafeSysctls in its config), else the pod fails to start")
    out.append("- docker run / podman run: " + " ".join(f"--sysctl {k}={v}" for k, v in pairs))
    out.append("- CNI tuning plugin, in the network's plugin list: "
               + json.dumps({"type": "tuning", "sysctl": dict(pairs)}))
    return "\n".join(out)
