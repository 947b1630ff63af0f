"""What kube-proxy does to the conntrack sysctls at start, by version, as pure functions.

kube-proxy writes nf_conntrack_max (and the hashsize module parameter), the
established and CLOSE_WAIT timeouts, and optionally tcp_be_liberal and the UDP
timeouts every time it starts; a value ct-tune puts in sysctl.d is undone then.
Whether it only raises a value or rewrites it whenever it differs changed between
releases (kubernetes/kubernetes, cmd/kube-proxy/app/conntrack.go, later
pkg/proxy/conntrack/sysctls.go):

- before 1.23: ``setIntSysCtl`` writes whenever the value differs (raise or lower);
- 1.23 to 1.28: only raises (PR #103174, "does not attempt to set sysctl values ...
  when the current values are already set higher");
- 1.29 to 1.35: writes whenever it differs again (PR #120448, the revert);
- 1.36 and 1.37: same, and the computed max is capped at 1,048,576 (PR #137002);
- 1.38 on: max is only raised again (PR #142035), the timeouts are still rewritten.

hashsize is raised to max / 4 when smaller, never lowered, in every version that
sizes max.  ``getConntrackMax``: maxPerCore x CPUs, at least ``min``; maxPerCore 0
leaves max alone (and then ``min`` is ignored); a timeout of 0 leaves that key alone.

The facts (``writers.kube_proxy``, from :mod:`ct_tune.writers`) say what was seen;
these helpers turn them into "what the value is after kube-proxy's next start" and
"which kube-proxy setting to change", for the rules (registered in :mod:`ct_tune.expr`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ct_tune.sysctlkeys import short_name

#: KubeProxyConfiguration defaults (pkg/proxy/apis/config/v1alpha1/defaults.go).
DEFAULTS: dict[str, int] = {"maxPerCore": 32768, "min": 131072,
                            "tcpEstablishedTimeout": 86400, "tcpCloseWaitTimeout": 3600}

#: The cap on the computed max since 1.36 (PR #137002).
MAX_CAP = 1048576
CAP_SINCE = (1, 36)

#: conntrack.udpTimeout and udpStreamTimeout exist since 1.29 (PR #120354).
UDP_SINCE = (1, 29)

#: The release ct-tune assumes when kube-proxy is assumed (profile) or its version is not
#: visible: the newest stable release when this model was written.
ASSUMED_VERSION = (1, 37)

#: Config field -> (sysctl short name, kube-proxy flag).
FIELDS: dict[str, tuple[str, str]] = {
    "maxPerCore": ("nf_conntrack_max", "--conntrack-max-per-core"),
    "min": ("nf_conntrack_max", "--conntrack-min"),
    "tcpEstablishedTimeout": ("nf_conntrack_tcp_timeout_established",
                              "--conntrack-tcp-timeout-established"),
    "tcpCloseWaitTimeout": ("nf_conntrack_tcp_timeout_close_wait",
                            "--conntrack-tcp-timeout-close-wait"),
    "udpTimeout": ("nf_conntrack_udp_timeout", "--conntrack-udp-timeout"),
    "udpStreamTimeout": ("nf_conntrack_udp_timeout_stream", "--conntrack-udp-timeout-stream"),
    "tcpBeLiberal": ("nf_conntrack_tcp_be_liberal", "--conntrack-tcp-be-liberal"),
}
#: Flag -> config field, for reading a command line.
FLAGS: dict[str, str] = {flag: name for name, (_key, flag) in FIELDS.items()}
DURATION_FIELDS = ("tcpEstablishedTimeout", "tcpCloseWaitTimeout", "udpTimeout",
                   "udpStreamTimeout")
#: kube-proxy writes 1 when it is true and leaves the key alone otherwise (never 0).
BOOL_FIELDS = ("tcpBeLiberal",)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> int | None:
    """Whole seconds of a Go duration ("24h0m0s", "1h", "90s", "0"); None when it is none."""
    text = str(text).strip().strip("\"'")
    if text in ("0", ""):
        return 0 if text == "0" else None
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    return int(total) if pos == len(text) and pos else None


def parse_int(text: Any) -> int | None:
    try:
        return int(str(text).strip().strip("\"'"))
    except ValueError:
        return None


def parse_bool(text: Any) -> int | None:
    word = str(text).strip().strip("\"'").lower()
    return {"true": 1, "1": 1, "false": 0, "0": 0}.get(word)


def parse_field(field: str, text: Any) -> int | None:
    """A conntrack setting as written in a config file or on a command line: timeouts in
    seconds, booleans as 1/0, counts as integers; None when it cannot be read."""
    if field in DURATION_FIELDS:
        return parse_duration(str(text))
    if field in BOOL_FIELDS:
        return parse_bool(text)
    return parse_int(text)


def parse_version(text: str | None) -> tuple[int, int] | None:
    """(major, minor) from "v1.29.3", "1.25", "kube-proxy:v1.30.0-eks-..."; None if absent."""
    m = re.search(r"v?(\d+)\.(\d+)(?:\.\d+)?", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def behaviour(version: tuple[int, ...] | list[int] | None) -> dict[str, Any]:
    """How the given release treats a value that differs from what it wants."""
    v = tuple(version[:2]) if version else ASSUMED_VERSION
    if v < (1, 23):
        max_mode, timeout_mode, pr = "rewrite", "rewrite", "before PR #103174"
    elif v < (1, 29):
        max_mode, timeout_mode, pr = "raise", "raise", "PR #103174"
    elif v < (1, 38):
        max_mode, timeout_mode, pr = "rewrite", "rewrite", "PR #120448"
    else:
        max_mode, timeout_mode, pr = "raise", "rewrite", "PR #142035"
    return {"release": f"{v[0]}.{v[1]}", "assumed": not version, "max_mode": max_mode,
            "timeout_mode": timeout_mode, "cap": MAX_CAP if v >= CAP_SINCE else None,
            "pr": pr}


def settings(kp: Mapping[str, Any]) -> dict[str, Any]:
    """The conntrack settings kube-proxy runs with: its config file's conntrack section when
    it was read (kube-proxy documents many flags as ignored with --config), else its flags,
    then the defaults.  Values are seconds for timeouts, None for "not set"."""
    conf = kp.get("config")
    given = dict(conf) if isinstance(conf, Mapping) else dict(kp.get("flags") or {})
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = given.get(name)
        out[name] = value if value is not None else DEFAULTS.get(name)
    return out


def target_max(conf: Mapping[str, Any], cpus: int, beh: Mapping[str, Any]) -> int:
    """getConntrackMax: maxPerCore x CPUs, at least min (capped since 1.36); 0: leave it."""
    per_core = conf.get("maxPerCore") or 0
    if per_core <= 0:
        return 0
    floor = conf.get("min") or 0
    scaled = per_core * max(1, int(cpus))
    if beh.get("cap") and scaled > beh["cap"]:
        return int(beh["cap"])
    return scaled if scaled > floor else floor


def resolve(writers: Mapping[str, Any] | None, assume: bool,
            cpus: int | None) -> dict[str, Any] | None:
    """What kube-proxy will write at its next start, from the facts, or from the profile's
    assumption (``assume``) when no kube-proxy was detected; None: no kube-proxy."""
    kp = (writers or {}).get("kube_proxy")
    detected = bool(kp)
    if not detected:
        if not assume:
            return None
        kp = {"source": "assumed", "flags": {}, "config": None, "config_file": None,
              "version": None}
    version = parse_version(kp.get("version"))
    beh = behaviour(version)
    conf = settings(kp)
    udp = (version or ASSUMED_VERSION) >= UDP_SINCE
    sets: dict[str, int | None] = {
        "nf_conntrack_max": target_max(conf, cpus or 1, beh) or None,
        "nf_conntrack_tcp_timeout_established": conf["tcpEstablishedTimeout"] or None,
        "nf_conntrack_tcp_timeout_close_wait": conf["tcpCloseWaitTimeout"] or None,
        "nf_conntrack_udp_timeout": (conf["udpTimeout"] or None) if udp else None,
        "nf_conntrack_udp_timeout_stream": (conf["udpStreamTimeout"] or None) if udp else None,
        # tcpBeLiberal came with the UDP timeouts (PR #120354)
        "nf_conntrack_tcp_be_liberal": 1 if udp and conf["tcpBeLiberal"] else None,
    }
    return {"detected": detected, "source": kp.get("source"), "pid": kp.get("pid"),
            "version": kp.get("version"), "config_file": kp.get("config_file"),
            "settings": conf, "sets": sets, "cpus": cpus or 1, **beh,
            "where": _where(kp, detected), "label": _label(kp, detected, beh)}


def for_profile(writers: Mapping[str, Any] | None, profile: Mapping[str, Any],
                host: Mapping[str, Any]) -> dict[str, Any] | None:
    """resolve() as rules call it: the profile's follow_kube_proxy is the assumption made
    when no kube-proxy was detected (k8s-node: yes, default: no)."""
    targets = profile.get("targets") or {}
    return resolve(writers, bool(targets.get("follow_kube_proxy")), host.get("cpus_online"))


def _label(kp: Mapping[str, Any], detected: bool, beh: Mapping[str, Any]) -> str:
    if not detected:
        return f"kube-proxy (assumed by the profile, release {beh['release']} behaviour)"
    what = "k3s's embedded kube-proxy" if kp.get("source") == "k3s" else "kube-proxy"
    if beh["assumed"]:
        return f"{what} (version not visible: release {beh['release']} behaviour assumed)"
    return f"{what} {kp.get('version')}"


def _where(kp: Mapping[str, Any], detected: bool) -> str:
    if not detected:
        return "kube-proxy's configuration (KubeProxyConfiguration conntrack section, or its flags)"
    if kp.get("source") == "k3s":
        return "kube-proxy-arg in /etc/rancher/k3s/config.yaml (or k3s --kube-proxy-arg)"
    path = kp.get("config_file")
    if path:
        extra = (" (kubeadm mounts it from the kube-proxy ConfigMap in kube-system: edit "
                 "the ConfigMap)" if path.startswith("/var/lib/kube-proxy/") else "")
        return f"the conntrack section of {path}{extra}"
    return "kube-proxy's command line"


def _field_for(short: str) -> list[str]:
    return [name for name, (key, _flag) in FIELDS.items() if key == short]


def _spell(kp: Mapping[str, Any], field: str, value: int) -> str:
    """One setting, written the way this kube-proxy is configured."""
    dur = field in DURATION_FIELDS
    if field in BOOL_FIELDS:
        word = "true" if value else "false"
        if kp.get("source") == "k3s":
            return f'"{FIELDS[field][1].lstrip("-")}={word}"'
        if kp.get("detected") and not kp.get("config_file"):
            return f"{FIELDS[field][1]}={word}"
        return f"{field}: {word}"
    if kp.get("source") == "k3s":
        flag = FIELDS[field][1].lstrip("-")
        return f'"{flag}={value}s"' if dur else f'"{flag}={value}"'
    if kp.get("detected") and not kp.get("config_file"):
        return f"{FIELDS[field][1]}={value}s" if dur else f"{FIELDS[field][1]}={value}"
    return f'{field}: {value}s' if dur else f"{field}: {value}"


def after_start(kp: Mapping[str, Any] | None, short: str, value: Any) -> Any:
    """The value `short` has after kube-proxy's next start if it is `value` before."""
    if not kp or not isinstance(value, int) or isinstance(value, bool):
        return value
    sets = kp["sets"].get(short)
    if sets is None:
        return value
    mode = kp["max_mode"] if short == "nf_conntrack_max" else kp["timeout_mode"]
    return max(value, sets) if mode == "raise" else sets


def owns(kp: Mapping[str, Any] | None, short: str, current: Any, wanted: Any,
         writable: Any = True) -> dict[str, Any] | None:
    """kube-proxy's effect on one key: what it sets, what survives its next start, and the
    setting to change so that `wanted` stays.  None when kube-proxy leaves the key alone."""
    if not kp or kp["sets"].get(short) is None:
        return None
    sets = kp["sets"][short]
    mode = kp["max_mode"] if short == "nf_conntrack_max" else kp["timeout_mode"]
    target = wanted if isinstance(wanted, int) and not isinstance(wanted, bool) else current
    survives = after_start(kp, short, target)
    fields = _field_for(short)
    if short == "nf_conntrack_max":
        cpus = kp["cpus"]
        per_core = max(1, int(target) // cpus) if isinstance(target, int) and target else 1
        if kp.get("cap"):
            per_core = min(per_core, max(1, kp["cap"] // cpus))
        change = (f"{_spell(kp, 'min', target)} and {_spell(kp, 'maxPerCore', per_core)}, "
                  f"or {_spell(kp, 'maxPerCore', 0)} to leave max to sysctl.d")
    elif fields[0] in BOOL_FIELDS:
        change = f"{_spell(kp, fields[0], 0)} to leave it to sysctl.d"
    else:
        change = (f"{_spell(kp, fields[0], target)}, or {_spell(kp, fields[0], 0)} to leave "
                  "it to sysctl.d")
    verb = "raises it to" if mode == "raise" else "sets it to"
    # a read-only key (a container's network namespace): the write fails and kube-proxy
    # exits ("open /proc/sys/net/netfilter/nf_conntrack_max: permission denied", PR #103174,
    # issue #141943); a raising release only writes when the value is lower
    fails = writable is False and isinstance(current, int) and (
        current != sets if mode == "rewrite" else current < sets)
    return {"sets": sets, "mode": mode, "survives": survives, "undoes": survives != target,
            "field": fields[0], "change": change, "where": kp["where"],
            "fails_readonly": fails, "leave": _spell(kp, fields[0] if short != "nf_conntrack_max"
                                                      else "maxPerCore", 0),
            "says": (f"{kp['label']} {verb} {sets:,} at every start"
                     f"{' when it is lower' if mode == 'raise' else ' whenever it differs'}")}


def hashsize_after(kp: Mapping[str, Any] | None, buckets: Any) -> Any:
    """kube-proxy raises hashsize to max / 4 when it is smaller, and never lowers it."""
    if not kp or not isinstance(buckets, int):
        return buckets
    mx = kp["sets"].get("nf_conntrack_max")
    return max(buckets, mx // 4) if mx else buckets


def after_reboot(lost: list[Mapping[str, Any]], kp: Mapping[str, Any] | None
                 ) -> list[dict[str, Any]]:
    """drift.unpersisted's list with kube-proxy's start taken into account: after a reboot
    a key it owns is what kube-proxy writes over the kernel default (``by`` names it), and
    a live value kube-proxy itself brings back is not lost at all."""
    out = []
    for d in lost:
        short = short_name(str(d["key"]))
        after = after_start(kp, short, d["default"])
        item = dict(d)
        if after != d["default"]:
            if after == d["live"]:
                continue
            item["default"], item["by"] = after, kp["label"] if kp else None
            item["shrinks"] = bool(d["shrinks"]) and isinstance(after, int) and (
                d["live"] == 0 or after < d["live"])
        out.append(item)
    return out
