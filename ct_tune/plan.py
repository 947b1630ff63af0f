"""From findings to the settings ct-tune would persist and write, with the safety policy.

Pure: findings and facts in, settings and skips out.  The same plan feeds
``audit --format sysctl`` (the fragment alone), ``apply --dry-run`` and
``apply``, so what is shown is what is done.

Safety (issue: "Applying"):
* nf_conntrack_max is only raised unless --allow-lower; never below the
  current count with the profile's headroom (count / target_usage); 0 is
  unlimited, so any other value lowers it.
* A key that is read-only here (container, non-initial network namespace) is
  not written and not persisted here: it must be set on the host.
* Only conntrack keys (sysctlkeys.WRITABLE_KEY) with an integer inside the key's
  range are ever planned: a rule recommending anything else is a broken rule file
  (an InputError naming it), never a line in a file or a live write.
* nf_conntrack_buckets before 4.7 is read-only in every namespace: it is
  persisted as modprobe.d ``options nf_conntrack hashsize=N``, never as sysctl.d.
* A key kube-proxy writes at every start (facts["writers"], or the profile's
  follow_kube_proxy assumption; :mod:`ct_tune.kubeproxy`) is not written when
  kube-proxy would undo it (a rewriting release and another value; a raising
  release and a lower value): the skip names the kube-proxy setting to change.
  A value kube-proxy keeps (a raising release below ours) is written, and its
  fragment comment says why it holds.
* The boot system (:mod:`ct_tune.bootinit`) decides the module files: OpenWrt's
  procd loads modules from /etc/modules.d (kmodloader), which reads every line as
  a module name and takes options from the same line: no modules-load.d or
  modprobe.d file is written there, and a missing /etc/modules.d entry is a note.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ct_tune import bootinit, kubeproxy
from ct_tune.errors import InputError
from ct_tune.findings import Finding
from ct_tune.profiles import Profile
from ct_tune.sysctlkeys import INT_MAX, WRITABLE_KEY, short_name, spec

MAX_KEY = "net.netfilter.nf_conntrack_max"
BUCKETS_KEY = "net.netfilter.nf_conntrack_buckets"
HOST_ONLY = "read-only here (container or non-initial network namespace): must be set on the host"
MODULE_ONLY = ("read-only in every namespace on this kernel (before 4.7): sized by the hashsize "
               "module parameter instead; apply writes 'options nf_conntrack hashsize={n}' to "
               "/etc/modprobe.d (next module load); to resize now, as root: "
               "echo {n} > /sys/module/nf_conntrack/parameters/hashsize")
OLD_MODULE = ("read-only on this kernel, whose conntrack is the old ip_conntrack module: set "
              "'options ip_conntrack hashsize={n}' in /etc/modprobe.d yourself (ct-tune writes "
              "no files for that module)")


@dataclass(frozen=True)
class Setting:
    """One key ct-tune manages, with the reasons the fragment prints beside it."""

    key: str
    value: Any
    current: Any
    rule: str
    title: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skip:
    """A recommendation not acted on, and why (shown in dry-run and apply output)."""

    key: str
    current: Any
    recommended: Any
    reason: str
    #: the value the key has from now on, when another writer (kube-proxy) sets it at
    #: start; None: it stays at ``current``
    stays: Any = None
    #: why, as a word a program can test (apply --format json; man ct-tune-json(5)):
    #: read-only, kube-proxy, not-lowered, module-parameter, unpinnable
    kind: str = "other"


@dataclass(frozen=True)
class Plan:
    settings: tuple[Setting, ...]
    skips: tuple[Skip, ...]
    #: options nf_conntrack hashsize=N for modprobe.d, None when not needed or built in
    hashsize: int | None
    #: write modules-load.d so nf_conntrack is loaded before systemd-sysctl runs
    load_module: bool
    builtin: bool | None
    #: what the user should know about files not written (boot system), one line each
    notes: tuple[str, ...] = ()
    #: who applies sysctl.d at boot and in what order (bootinit), for the fragment header
    applier: str = "systemd-sysctl"
    order: str = ""

    def value(self, key: str) -> Any:
        return next((s.value for s in self.settings if s.key == key), None)

    @property
    def kept(self) -> dict[str, Any]:
        """Recommendations not acted on: each key stays at its current value."""
        return {s.key: s.current if s.stays is None else s.stays for s in self.skips}


def write_problem(key: str, value: Any) -> str | None:
    """Why ct-tune must not write value to key (a key it does not manage, not an integer,
    outside what the kernel takes as meant), or None."""
    if not isinstance(key, str) or not WRITABLE_KEY.fullmatch(key):
        return f"{key!r} is not a conntrack key ct-tune may write"
    key_spec = spec(key)
    if key_spec is not None:
        return key_spec.write_problem(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value!r} is not an integer"
    return None if 0 <= value <= INT_MAX else f"{value} is outside 0..{INT_MAX:,}"


def _checked(f: Finding) -> Skip | None:
    """A recommendation the kernel would refuse: the rule's fault (an error naming its
    file), unless it only keeps the host's current value (then that key is left alone)."""
    problem = write_problem(f.parameter, f.recommended)
    if problem is None:
        return None
    if f.recommended == f.current and not f.changes:
        return Skip(f.parameter, f.current, f.recommended,
                    f"the current value cannot be pinned: {problem}", kind="unpinnable")
    raise InputError(f.rule_file, f"recommended value for {f.parameter}: {problem}",
                     item=f.rule)


def _host_key(facts: dict[str, Any], key: str) -> str:
    """The name the host really has for a key: the old ip_conntrack module's
    net.ipv4.netfilter.ip_conntrack_* when facts read it under the modern name."""
    return (facts.get("sysctl", {}).get(key) or {}).get("key") or key


def max_floor(count: int | None, target_usage: float) -> int:
    """The lowest max that keeps today's entries within the profile's headroom."""
    if not count:
        return 0
    return math.ceil(count / target_usage) if target_usage > 0 else count


def _max_skip(f: Finding, count: int | None, target_usage: float,
              allow_lower: bool) -> Skip | None:
    cur, rec = f.current, f.recommended
    lowering = cur == 0 or (isinstance(cur, int) and rec < cur)
    if lowering and not allow_lower:
        return Skip(f.parameter, cur, rec, "would lower nf_conntrack_max"
                    + (" from unlimited (0)" if cur == 0 else "")
                    + ": only raised by default; pass --allow-lower to lower it",
                    kind="not-lowered")
    floor = max_floor(count, target_usage)
    if lowering and rec < floor:
        return Skip(f.parameter, cur, rec, f"below the {count:,} entries in use now with the "
                    f"profile's headroom ({floor:,}): not lowered even with --allow-lower",
                    kind="not-lowered")
    return None


def _sources(f: Finding, profile: Profile) -> tuple[str, ...]:
    """The rule's sources, and the profile's own reason and source when it set the value."""
    spec = profile.timeouts.get(short_name(f.parameter))
    extra = ()
    if spec and spec["value"] == f.recommended:
        extra = (f"profile {profile.name}: {spec['reason']} ({spec['source']})",)
    return (*extra, *(s for s in f.sources if "the profile sets the value" not in s))


def kube_proxy(facts: dict[str, Any], profile: Profile) -> dict[str, Any] | None:
    """What kube-proxy writes at its next start on this host (detected, or assumed by the
    profile), as the rules see it; None: nothing else writes the conntrack keys."""
    return kubeproxy.resolve(facts.get("writers"),
                             bool(profile.targets.get("follow_kube_proxy")),
                             (facts.get("host") or {}).get("cpus_online"))


def _hashsize_owner(kp: dict[str, Any] | None, value: Any) -> str | None:
    """kube-proxy raises hashsize to max / 4 at start: a smaller buckets value is undone."""
    after = kubeproxy.hashsize_after(kp, value)
    if kp is None or after == value:
        return None
    return (f"{kp['label']} raises it to {after:,} (its max / 4) at every start: a "
            f"sysctl.d value of {value:,} is undone; kube-proxy sizes it from max: set "
            f"{kubeproxy.owns(kp, 'nf_conntrack_max', value * 4, value * 4)['change']} "
            f"in {kp['where']}")


def _kube_skip(kp: dict[str, Any] | None, f: Finding, key_writable: bool) -> Skip | None:
    """A value kube-proxy would undo at its next start is not written: ct-tune must not
    write what another agent rewrites; the reason gives the kube-proxy setting instead."""
    short = short_name(f.parameter)
    if f.parameter == BUCKETS_KEY:
        reason = _hashsize_owner(kp, f.recommended)
        return Skip(f.parameter, f.current, f.recommended, reason,
                    stays=kubeproxy.hashsize_after(kp, f.current),
                    kind="kube-proxy") if reason else None
    o = kubeproxy.owns(kp, short, f.current, f.recommended, key_writable)
    if o is None or not o["undoes"]:
        return None
    return Skip(f.parameter, f.current, f.recommended,
                f"{o['says']}: a sysctl.d value of {f.recommended:,} is undone; set "
                f"{o['change']} in {o['where']}",
                stays=kubeproxy.after_start(kp, short, f.current), kind="kube-proxy")


def _kube_holds(kp: dict[str, Any] | None, f: Finding) -> str:
    """Why a value kube-proxy also writes holds anyway (said in the fragment)."""
    o = kubeproxy.owns(kp, short_name(f.parameter), f.current, f.recommended)
    if o is None:
        return ""
    if o["mode"] == "raise" and f.recommended != o["sets"]:
        return f"; {o['says']}: {f.recommended:,} is above that and holds"
    return f"; {o['says']}: the same value"


def _host_reason(kp: dict[str, Any] | None, f: Finding) -> str:
    """HOST_ONLY, naming kube-proxy when it writes the key too: in a container with
    read-only keys its write fails and it exits at start, so the fix is its setting."""
    reason = HOST_ONLY + ("" if f.changes else " (it already has the recommended value)")
    o = kubeproxy.owns(kp, short_name(f.parameter), f.current, f.recommended, False)
    if o is None:
        if kp is not None and f.parameter == MAX_KEY:
            reason += f"; {kp['label']} leaves it alone ({kp['where']})"
        return reason
    if o["fails_readonly"]:
        return (reason + f"; {o['says']}, but it is read-only here: the write fails and "
                f"kube-proxy exits at start: set {o['leave']} in {o['where']}")
    return reason + f"; {o['says']}: to change it set {o['change']} in {o['where']}"


def _boot_files(facts: dict[str, Any], load_module: bool, hashsize: int | None
                ) -> tuple[bool, int | None, tuple[str, ...]]:
    """The module files this boot system reads.  OpenWrt (procd): /etc/modules.d loads
    modules (kmodloader, ubox kmodloader.c main_loader: every line is 'module [options]',
    no comments), /etc/init.d/sysctl then runs 'sysctl -e -p' on /etc/sysctl.d/*.conf and
    /etc/sysctl.conf; modules-load.d and modprobe.d are read by nothing there."""
    writers = facts.get("writers")
    boot = bootinit.boot_system(writers)
    if boot["init"] != "procd":
        return load_module, hashsize, ()
    notes = []
    loaded_by = [e.get("file") for e in (writers or {}).get("modules_d") or []
                 if isinstance(e, dict) and e.get("module") == "nf_conntrack"]
    if load_module and not loaded_by:
        notes.append("no /etc/modules.d entry loads nf_conntrack: OpenWrt's sysctl script "
                     "skips net.netfilter keys until it is loaded; ct-tune writes no file "
                     "there (kmodloader reads every line as a module name): install "
                     "kmod-nf-conntrack, or as root: " + boot["early_fix"])
    if hashsize:
        notes.append(f"no /etc/modprobe.d hashsize={hashsize:,}: OpenWrt's kmodloader takes "
                     "module options from /etc/modules.d lines, not modprobe.d; the "
                     "sysctl.d nf_conntrack_buckets line sizes the table at boot")
    return False, None, tuple(notes)


def build(findings: Iterable[Finding], facts: dict[str, Any], profile: Profile,
          allow_lower: bool = False) -> Plan:
    """Settings to persist and write: every recommendation this host may set, after the
    safety policy.  Unchanged recommendations are kept too, so the fragment pins them."""
    targets = profile.targets
    count = facts["sysctl"].get("net.netfilter.nf_conntrack_count", {}).get("value")
    settings: list[Setting] = []
    skips: list[Skip] = []
    module_buckets = None
    kp = kube_proxy(facts, profile)
    writable = {k: bool((v or {}).get("writable", True)) for k, v in facts["sysctl"].items()
                if isinstance(v, dict)}
    for f in findings:
        if f.parameter is None or f.recommended is None:
            continue
        bad = _checked(f)
        if bad:
            skips.append(bad)
            continue
        if f.scope == "module" and f.parameter == BUCKETS_KEY:
            # read-only on this kernel (before 4.7) in every namespace: no sysctl.d line
            # (systemd-sysctl would fail on it); modprobe.d hashsize= sizes the table
            if _host_key(facts, BUCKETS_KEY) != BUCKETS_KEY:  # the ip_conntrack module
                skips.append(Skip(f.parameter, f.current, f.recommended, OLD_MODULE.format(
                    n=f.recommended), kind="module-parameter"))
                continue
            module_buckets = f.recommended
            skips.append(Skip(f.parameter, f.current, f.recommended, MODULE_ONLY.format(
                n=f.recommended), kind="module-parameter"))
            continue
        if f.scope == "host":
            skips.append(Skip(f.parameter, f.current, f.recommended, _host_reason(kp, f),
                              kind="read-only"))
            continue
        undone = _kube_skip(kp, f, writable.get(f.parameter, True))
        if undone:
            skips.append(undone)
            continue
        if f.parameter == MAX_KEY and f.changes:
            skip = _max_skip(f, count, targets.get("target_usage", 1.0), allow_lower)
            if skip:
                skips.append(skip)
                settings.append(Setting(f.parameter, f.current, f.current, f.rule, f.title,
                                        f"kept: {skip.reason}", {}, _sources(f, profile)))
                continue
        settings.append(Setting(_host_key(facts, f.parameter), f.recommended, f.current,
                                f.rule, f.title, f.summary + _kube_holds(kp, f),
                                dict(f.evidence),
                                _sources(f, profile)))
    settings.sort(key=lambda s: s.key)
    conntrack = facts.get("conntrack", {})
    builtin = conntrack.get("builtin")
    buckets = next((s.value for s in settings if s.key == BUCKETS_KEY), module_buckets)
    # hashsize= alone makes the kernel set max = 8 x hashsize at load: only with max pinned
    pinned_max = any(s.key == _host_key(facts, MAX_KEY) for s in settings)
    has_netfilter = any(s.key.startswith("net.netfilter.") for s in settings)
    load_module, hashsize, notes = _boot_files(
        facts, has_netfilter and builtin is not True,
        buckets if buckets and pinned_max and builtin is not True else None)
    boot = bootinit.boot_system(facts.get("writers"))
    return Plan(settings=tuple(settings), skips=tuple(skips), hashsize=hashsize,
                load_module=load_module, builtin=builtin, notes=notes,
                applier=boot["applier"], order=boot["order"])
