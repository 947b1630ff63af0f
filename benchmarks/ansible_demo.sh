#!/usr/bin/env bash
# The ct_tune.conntrack collection as an operator sees it (run as root from a checkout with
# `pip install -e '.[test]'` done): in a throwaway network namespace, with apply's files
# under a scratch root, ansible-playbook runs apply in check mode with --diff, then apply,
# then apply again, and prints Ansible's own output for each.  Nothing outside the namespace
# and the scratch directory changes.
#
#     sudo benchmarks/ansible_demo.sh [PROFILE]
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
venv=${VENV:-$here/.venv}
profile=${1:-default}
[ "$(id -u)" = 0 ] || { echo "ansible_demo.sh: needs root (network namespace)" >&2; exit 3; }
tmp=$(mktemp -d)
ns="ctt-ansible-demo-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
mkdir -p "$tmp/root" "$tmp/bin"
printf '#!/bin/sh\nPYTHONPATH=%s exec %s -m ct_tune "$@"\n' "$here" "$venv/bin/python" \
  > "$tmp/bin/ct-tune"
chmod 755 "$tmp/bin/ct-tune"
for mode in check apply again; do
  case $mode in
    check) extra="check_mode: true" title="apply in check mode (--diff)";;
    apply) extra="" title="apply";;
    again) extra="" title="apply again (nothing to change)";;
  esac
  cat > "$tmp/$mode.yml" <<EOF
- name: ${title}
  hosts: all
  gather_facts: false
  tasks:
    - name: conntrack settings (profile ${profile})
      ct_tune.conntrack.apply:
        profile: ${profile}
        root: ${tmp}/root
        sample: false
      ${extra}
EOF
  echo "### ansible-playbook $mode.yml --diff"
  ip netns exec "$ns" env PATH="$tmp/bin:$venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$here" \
    ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0 ANSIBLE_NOCOLOR=1 \
    ANSIBLE_HOME="$tmp/ansible-home" ANSIBLE_LOCAL_TEMP="$tmp/ansible-tmp" \
    ANSIBLE_PYTHON_INTERPRETER="$venv/bin/python" \
    "$venv/bin/ansible-playbook" -i localhost, -c local --diff "$tmp/$mode.yml"
done
