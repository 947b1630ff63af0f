#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ct-tune maintainers
# MIT License (see the ct-tune project)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: apply
short_description: Apply (or roll back) ct-tune's connection tracking settings
version_added: "0.1.0"
description:
  - Runs C(ct-tune apply --format json) on the target, which writes the recommended
    C(net.netfilter.nf_conntrack_*) values live (under /proc/sys) and to
    C(/etc/sysctl.d), C(/etc/modules-load.d) and C(/etc/modprobe.d), as one transaction
    it can roll back.
  - RV(ignore:changed) is true only when a file or a live value changed; a second run
    reports ok and writes nothing (files are compared by their settings).
  - In check mode it runs C(ct-tune apply --dry-run), which writes nothing, takes no
    lock and predicts RV(ignore:changed) exactly.
  - With O(state=rolled_back) it runs C(ct-tune rollback) instead, restoring the files
    and live values saved by the last apply that changed something.
  - "Needs the C(ct-tune) command on the target (C(pip install ct-tune)) and root
    (C(become: true)), except with O(root) a scratch directory and O(live=false)."
options:
  state:
    description:
      - V(present) applies the profile's recommendations.
      - V(rolled_back) restores the state saved by the last apply; unchanged (ok) when
        there is nothing to roll back.
    type: str
    choices: [present, rolled_back]
    default: present
  root:
    description: Where the files go (and the rollback state, under
      C(ROOT/var/lib/ct-tune)). Default C(/).
    type: path
  live:
    description: Also write the live values. V(false) writes the files only (next boot).
    type: bool
    default: true
  allow_lower:
    description: Allow lowering C(nf_conntrack_max) (never below the entries in use).
    type: bool
    default: false
  name:
    description: File name of the sysctl.d fragment.
    type: str
    default: 99-ct-tune.conf
  sample:
    description: Read the conntrack table for the timeout recommendations.
    type: bool
    default: true
  lock_wait:
    description: Seconds to wait for another apply or rollback, then fail with
      RV(reason=busy).
    type: float
    default: 5
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ct_tune.conntrack.cttune
  - ct_tune.conntrack.cttune.RULES
attributes:
  check_mode:
    support: full
    details: Runs C(ct-tune apply --dry-run); nothing is written and RV(ignore:changed) is
      exactly what the real run reports.
  diff_mode:
    support: full
    details: The before and after text of each file, and of the live values as
      C(key = value) lines.
  platform:
    platforms: linux
seealso:
  - module: ct_tune.conntrack.audit
  - module: ansible.posix.sysctl
notes:
  - Failures carry RV(reason) from ct-tune's JSON (C(man 5 ct-tune-json), APPLY REPORT)
    V(busy) (another apply holds the lock), V(not-root), V(read-only) (a read-only
    C(/etc) or C(/proc/sys)), V(interrupted), V(not-installed), ...; nothing was changed
    unless the reason is V(restore-failed).
  - Keys this host may not set (read-only in a container, owned by kube-proxy, a lower
    C(nf_conntrack_max)) are skipped, not failed; see RV(skipped_keys) (not C(skipped),
    which Ansible reads as the task's own status).
  - In a non-initial network namespace (a container) without O(root) only live values
    are written; with O(live=false) there is nothing to do and the task is skipped.
author:
  - ct-tune maintainers (@ct-tune)
"""

EXAMPLES = r"""
- name: What would change (nothing is written)
  ct_tune.conntrack.apply:
    profile: k8s-node
  check_mode: true
  diff: true
  register: plan

- name: Apply
  become: true
  ct_tune.conntrack.apply:
    profile: k8s-node

- name: Rehearse the files unprivileged in a scratch tree
  ct_tune.conntrack.apply:
    root: /tmp/ct-tune-try
    live: false

- name: Undo the last apply
  become: true
  ct_tune.conntrack.apply:
    state: rolled_back
"""

RETURN = r"""
changed:
  description: Whether a file or a live value changed (in check mode, would change).
  returned: always
  type: bool
files:
  description: Each file ct-tune writes, with C(path), C(action) (create, replace, remove
    or unchanged), C(before), C(after) and their SHA-256.
  returned: success
  type: list
  elements: dict
live_values:
  description: Each live value, with C(key), C(path), C(before), C(after), C(changed).
  returned: success
  type: list
  elements: dict
skipped_keys:
  description: Recommendations not acted on, with C(key), C(current), C(recommended),
    C(kind) (read-only, kube-proxy, not-lowered, module-parameter, unpinnable) and
    C(reason).
  returned: success
  type: list
  elements: dict
notes:
  description: What the operator should know (files not written and why, pod settings).
  returned: success
  type: list
  elements: str
state_file:
  description: Where the previous state was saved (apply) or kept (rollback); null when
    nothing changed or in check mode.
  returned: success
  type: str
  sample: /var/lib/ct-tune/rollback.json
persist:
  description: False when only live values were written (a non-initial network
    namespace without O(root)).
  returned: success
  type: bool
reason:
  description: Why the task failed or was skipped (V(busy), V(not-root), V(read-only),
    V(namespace), V(interrupted), V(not-loaded), V(bad-input), V(restore-failed),
    V(not-installed), V(error)).
  returned: failure
  type: str
report:
  description: The whole C(ct-tune apply --format json) document.
  returned: when ct-tune printed one
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ct_tune.conntrack.plugins.module_utils.cttune import (
    HOST_ARGS,
    RULES_ARGS,
    apply_args,
    diff_of,
    find_ct_tune,
    run_json,
)

#: what each failure means for the operator, beyond ct-tune's own message
HINTS = {
    "busy": "another ct-tune apply or rollback holds the lock: retry later or raise "
            "lock_wait",
    "not-root": "run the task with become: true (or give root: SCRATCH_DIR with live: false)",
    "read-only": "the target cannot be written here (a read-only /etc or /proc/sys, a "
                 "container): set these values on the host; nothing was changed",
    "interrupted": "an earlier apply was killed: run this module with state: rolled_back "
                   "first",
    "not-loaded": "nf_conntrack is not loaded on this host",
    "restore-failed": "a change failed AND the previous state could not be fully restored: "
                      "check the host by hand",
}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "rolled_back"]),
            root=dict(type="path"),
            live=dict(type="bool", default=True),
            allow_lower=dict(type="bool", default=False),
            name=dict(type="str", default="99-ct-tune.conf"),
            lock_wait=dict(type="float", default=5),
            **HOST_ARGS, **RULES_ARGS,
        ),
        supports_check_mode=True,
    )
    exe = find_ct_tune(module)
    rc, doc, out, err = run_json(module, exe, apply_args(module.params, module.check_mode))
    if not isinstance(doc, dict) or "changed" not in doc:
        command = "rollback" if module.params["state"] == "rolled_back" else "apply"
        module.fail_json(msg=f"ct-tune {command} failed (exit {rc}): "
                             f"{err.strip() or out.strip() or 'no output'}",
                         rc=rc, stderr=err, reason="error", changed=False)
    result = dict(
        changed=bool(doc.get("changed")),
        files=doc.get("files") or [],
        live_values=doc.get("live_values") or [],
        skipped_keys=doc.get("skipped") or [],
        notes=doc.get("notes") or [],
        state_file=doc.get("state_file"),
        persist=doc.get("persist"),
        report=doc,
    )
    error = doc.get("error")
    if error:
        reason = error.get("reason") or "error"
        if reason == "no-state" and module.params["state"] == "rolled_back":
            result["msg"] = "nothing to roll back: " + error.get("message", "")
            module.exit_json(**result)
        if reason == "namespace" and module.params["state"] == "present":
            module.exit_json(skipped=True, reason=reason, msg=error.get("message"), **result)
        msg = error.get("message") or err.strip()
        if reason in HINTS:
            msg = f"{msg} ({HINTS[reason]})"
        module.fail_json(msg=msg, reason=reason, rc=rc, stderr=err, **result)
    for warning in doc.get("warnings") or []:
        module.warn(warning)
    if module._diff and result["changed"]:
        result["diff"] = diff_of(doc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
