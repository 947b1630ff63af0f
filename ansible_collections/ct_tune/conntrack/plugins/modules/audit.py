#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ct-tune maintainers
# MIT License (see the ct-tune project)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: audit
short_description: Audit a host's netfilter connection tracking with ct-tune
version_added: "0.1.0"
description:
  - Runs C(ct-tune audit --format json) on the target and returns its findings, the
    overall status and a summary of the facts they rest on.
  - Never changes anything; RV(ignore:changed) is always false.
  - The result is meant for C(when:) and C(failed_when:), or O(fail_on) fails the task
    at a severity.
  - Needs the C(ct-tune) command on the target (C(pip install ct-tune)); the module
    itself uses only the Python standard library.
options:
  fail_on:
    description:
      - Fail the task when the audit status is at least this urgent.
      - The order is V(critical) > V(warning) > V(unknown) > ok; V(none) never fails.
    type: str
    choices: [none, unknown, warning, critical]
    default: none
  sample:
    description: Read the conntrack table (a sample of flows) for the timeout findings.
      V(false) is faster on a busy host.
    type: bool
    default: true
  facts:
    description: Audit this snapshot (written by C(ct-tune collect)) instead of the host.
    type: path
  root:
    description: Where /etc is, for the boot configuration ct-tune reads.
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ct_tune.conntrack.cttune
  - ct_tune.conntrack.cttune.RULES
attributes:
  check_mode:
    support: full
    details: The audit changes nothing, so it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: linux
seealso:
  - module: ct_tune.conntrack.apply
  - module: ct_tune.conntrack.collect
notes:
  - The full report format is described in C(man 5 ct-tune-json) (AUDIT REPORT).
author:
  - ct-tune maintainers (@ct-tune)
"""

EXAMPLES = r"""
- name: Audit connection tracking
  ct_tune.conntrack.audit:
    profile: k8s-node
    sample: false
  register: ct

- name: Tune only the hosts that need it
  ct_tune.conntrack.apply:
    profile: k8s-node
  when: ct.status in ['warning', 'critical']

- name: Stop the rollout on a host at risk
  ct_tune.conntrack.audit:
    fail_on: critical

- name: Show the table usage
  ansible.builtin.debug:
    msg: "{{ ct.facts_summary.count }} of {{ ct.facts_summary.max }} entries"
"""

RETURN = r"""
status:
  description: The audit status, the most urgent finding (V(unknown) when an input
    could not be read).
  returned: success
  type: str
  sample: warning
exit_code:
  description: ct-tune's exit status (0 ok, 1 warning, 2 critical, 3 unknown).
  returned: success
  type: int
  sample: 1
findings:
  description: Every finding, as in the JSON report (rule, severity, parameter, current,
    recommended, summary, ...).
  returned: success
  type: list
  elements: dict
changes:
  description: The findings whose recommended value differs from the current one.
  returned: success
  type: list
  elements: dict
  sample: [{"parameter": "net.netfilter.nf_conntrack_max", "current": 65536,
            "recommended": 262144, "severity": "critical", "rule": "conntrack-max"}]
problems:
  description: The findings at V(warning) or above.
  returned: success
  type: list
  elements: dict
errors:
  description: Input problems (PATH, what is wrong) that made findings V(unknown).
  returned: success
  type: list
  elements: str
profile:
  description: The profile the rules used.
  returned: success
  type: str
facts_summary:
  description: The facts a playbook usually branches on.
  returned: success
  type: dict
  sample: {"hostname": "node1", "kernel": "6.1.0-18-amd64", "count": 1234, "max": 262144,
           "usage": 0.004707, "buckets": 262144, "initial_netns": true, "loaded": true}
report:
  description: The whole C(ct-tune audit --format json) report, facts included.
  returned: success
  type: dict
reason:
  description: Why the task failed (V(not-installed), V(bad-input), V(fail_on)).
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ct_tune.conntrack.plugins.module_utils.cttune import (
    HOST_ARGS,
    RULES_ARGS,
    audit_args,
    facts_summary,
    find_ct_tune,
    run_json,
    status_at_least,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            fail_on=dict(type="str", default="none",
                         choices=["none", "unknown", "warning", "critical"]),
            facts=dict(type="path"),
            root=dict(type="path"),
            **HOST_ARGS, **RULES_ARGS,
        ),
        supports_check_mode=True,
    )
    exe = find_ct_tune(module)
    rc, report, out, err = run_json(module, exe, audit_args(module.params))
    if not isinstance(report, dict) or "findings" not in report:
        module.fail_json(msg=f"ct-tune audit failed (exit {rc}): "
                             f"{err.strip() or out.strip() or 'no output'}",
                         rc=rc, stderr=err, reason="bad-input")
    findings = report.get("findings") or []
    result = dict(
        changed=False,
        status=report.get("status"),
        exit_code=rc,
        findings=findings,
        changes=[f for f in findings if f.get("parameter") and f.get("recommended") is not None
                 and f.get("recommended") != f.get("current")],
        problems=[f for f in findings if f.get("severity") in ("warning", "critical")],
        errors=report.get("errors") or [],
        profile=report.get("profile"),
        facts_summary=facts_summary(report),
        report=report,
    )
    if status_at_least(result["status"], module.params["fail_on"]):
        worst = [f for f in findings if status_at_least(f.get("severity"),
                                                        module.params["fail_on"])]
        lines = [f"{f.get('severity')} {f.get('rule')}: {f.get('summary')}"
                 for f in worst] or result["errors"]
        module.fail_json(msg=f"conntrack audit status {result['status']} "
                             f"(fail_on: {module.params['fail_on']}): {'; '.join(lines)}",
                         reason="fail_on", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
