#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ct-tune maintainers
# MIT License (see the ct-tune project)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: collect
short_description: Write a host's ct-tune facts snapshot for the fleet report
version_added: "0.1.0"
description:
  - Runs C(ct-tune collect -o DEST) on the target, a versioned JSON snapshot of
    everything ct-tune reads (conntrack sysctls, counters, memory, kernel, kube-proxy).
  - Gather the snapshots with M(ansible.builtin.fetch) and run C(ct-tune fleet DIR) on
    the controller for one report of the fleet, or C(ct-tune audit --facts FILE) for one
    host.
  - Needs the C(ct-tune) command on the target (C(pip install ct-tune)).
options:
  dest:
    description: Where to write the snapshot on the target (replaced atomically).
    type: path
    required: true
  sample:
    description: Include a sample of the conntrack table (flows by state, port, timeout).
    type: bool
    default: true
  return_content:
    description: Also return the snapshot itself as RV(snapshot).
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ct_tune.conntrack.cttune
attributes:
  check_mode:
    support: full
    details: Nothing is written; RV(ignore:changed) is true, since a snapshot records the
      moment it was taken and a new one always differs.
  diff_mode:
    support: none
  platform:
    platforms: linux
seealso:
  - module: ct_tune.conntrack.audit
  - module: ansible.builtin.fetch
notes:
  - RV(ignore:changed) is true whenever the file at O(dest) was written with other bytes
    than it had, which is every run (the snapshot holds the time it was collected and the
    uptime). Use C(changed_when) with V(false) if a snapshot should not count as a change.
author:
  - ct-tune maintainers (@ct-tune)
"""

EXAMPLES = r"""
- name: Snapshot conntrack facts
  ct_tune.conntrack.collect:
    dest: /var/tmp/ct-tune-snapshot.json
    sample: false

- name: Gather them on the controller
  ansible.builtin.fetch:
    src: /var/tmp/ct-tune-snapshot.json
    dest: "snapshots/{{ inventory_hostname }}.json"
    flat: true
"""

RETURN = r"""
dest:
  description: Path of the snapshot on the target.
  returned: success
  type: str
  sample: /var/tmp/ct-tune-snapshot.json
sha256:
  description: SHA-256 of the snapshot written.
  returned: success and not in check mode
  type: str
size:
  description: Size of the snapshot in bytes.
  returned: success and not in check mode
  type: int
snapshot:
  description: The snapshot (O(return_content=true)).
  returned: when O(return_content=true) and not in check mode
  type: dict
reason:
  description: Why the task failed (V(not-installed), V(error)).
  returned: failure
  type: str
"""

import hashlib
import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ct_tune.conntrack.plugins.module_utils.cttune import (
    HOST_ARGS,
    collect_args,
    find_ct_tune,
)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            return_content=dict(type="bool", default=False),
            **HOST_ARGS,
        ),
        supports_check_mode=True,
    )
    dest = module.params["dest"]
    exe = find_ct_tune(module)
    if module.check_mode:
        module.exit_json(changed=True, dest=dest)
    before = _read(dest)
    rc, _out, err = module.run_command([exe, *collect_args(module.params, dest)],
                                       environ_update={"LC_ALL": "C.UTF-8"})
    if rc != 0:
        module.fail_json(msg=f"ct-tune collect failed (exit {rc}): "
                             f"{err.strip() or 'no output'}", rc=rc, stderr=err,
                         reason="error", changed=_read(dest) != before)
    data = _read(dest)
    if data is None:
        module.fail_json(msg=f"{dest}: ct-tune collect wrote no file", reason="error")
    result = dict(changed=data != before, dest=dest, size=len(data),
                  sha256=hashlib.sha256(data).hexdigest())
    if module.params["return_content"]:
        try:
            result["snapshot"] = json.loads(data.decode("utf-8"))
        except ValueError as e:
            module.fail_json(msg=f"{dest}: not JSON: {e}", reason="error", **result)
    if err.strip():
        for line in err.strip().splitlines():
            module.warn(line)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
