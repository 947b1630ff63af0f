# -*- coding: utf-8 -*-
# Copyright: ct-tune maintainers
# MIT License (see the ct-tune project)
"""Options every ct_tune.conntrack module shares, documented once (module_utils.cttune's
HOST_ARGS and RULES_ARGS are their argument specs)."""

from __future__ import annotations


class ModuleDocFragment:
    # where ct-tune runs and what it reads: audit, apply and collect
    DOCUMENTATION = r"""
options:
  sample_limit:
    description: Read at most this many table entries and scale the counts.
    type: int
  procfs:
    description: Where procfs is (a captured tree, for testing); apply writes the live
      values under its C(sys/). Default C(/proc).
    type: path
  sysfs:
    description: Where sysfs is. Default C(/sys).
    type: path
  executable:
    description: Path of the C(ct-tune) command; default C(ct-tune) on the target's PATH.
    type: path
requirements:
  - ct-tune on the target (C(pip install ct-tune))
"""

    # which rules and targets: audit and apply
    RULES = r"""
options:
  profile:
    description: Targets to tune for (C(ct-tune profiles list)), such as V(default),
      V(k8s-node) or V(nat-gateway).
    type: str
    default: default
  rules_dirs:
    description: Extra rules directories, later ones win.
    type: list
    elements: path
    default: []
  builtin_rules:
    description: Load the rules shipped with ct-tune.
    type: bool
    default: true
"""
