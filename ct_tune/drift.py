"""Drift between the boot configuration and the running kernel, as pure functions.

The audit compares three things: what sysctl.d and /etc/sysctl.conf will set at
the next boot (``facts["persist"]``, see :mod:`ct_tune.sysctld`), what the
kernel holds now (``sysctl``), and what the kernel would hold after a reboot if
no file set a key (its compiled-in default, :data:`KERNEL_DEFAULTS` and
:func:`boot_defaults`).  A configured value that is not live means the
configuration did not apply (or someone changed it by hand since); a live value
that is neither the default nor configured is lost at the next reboot.

These are the helpers rule files call (registered in :mod:`ct_tune.expr`); they
do no I/O, and answer None or an empty list for snapshots without ``persist``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ct_tune import kernelmodel, sysctld
from ct_tune.sysctlkeys import OLD_PREFIX, full_name, short_name

#: Compiled-in defaults of the keys whose default does not depend on the host, by the
#: short name rules use.  Every group cites where the kernel sets it; keys whose default
#: moved between releases are in :func:`boot_defaults`, keys not listed are never judged.
KERNEL_DEFAULTS: dict[str, int] = {
    # net/netfilter/nf_conntrack_proto_tcp.c, tcp_timeouts[]: SYN_SENT 2 MINS, SYN_RECV 60 SECS,
    # ESTABLISHED 5 DAYS, FIN_WAIT 2 MINS, CLOSE_WAIT 60 SECS, LAST_ACK 30 SECS,
    # TIME_WAIT 2 MINS, CLOSE 10 SECS, RETRANS 5 MINS, UNACK 5 MINS
    "nf_conntrack_tcp_timeout_syn_sent": 120,
    "nf_conntrack_tcp_timeout_syn_recv": 60,
    "nf_conntrack_tcp_timeout_established": 432000,
    "nf_conntrack_tcp_timeout_fin_wait": 120,
    "nf_conntrack_tcp_timeout_close_wait": 60,
    "nf_conntrack_tcp_timeout_last_ack": 30,
    "nf_conntrack_tcp_timeout_time_wait": 120,
    "nf_conntrack_tcp_timeout_close": 10,
    "nf_conntrack_tcp_timeout_max_retrans": 300,
    "nf_conntrack_tcp_timeout_unacknowledged": 300,
    # nf_conntrack_proto_tcp.c, nf_conntrack_tcp_init_net(): tcp_loose = 1,
    # tcp_be_liberal = 0, tcp_ignore_invalid_rst = 0, tcp_max_retrans = 3
    "nf_conntrack_tcp_loose": 1,
    "nf_conntrack_tcp_be_liberal": 0,
    "nf_conntrack_tcp_ignore_invalid_rst": 0,
    "nf_conntrack_tcp_max_retrans": 3,
    # nf_conntrack_proto_udp.c, udp_timeouts[UDP_CT_UNREPLIED] = 30*HZ (the stream timeout
    # changed between releases: see boot_defaults)
    "nf_conntrack_udp_timeout": 30,
    # nf_conntrack_proto_icmp.c / nf_conntrack_proto_icmpv6.c: 30*HZ
    "nf_conntrack_icmp_timeout": 30,
    "nf_conntrack_icmpv6_timeout": 30,
    # nf_conntrack_proto_generic.c: nf_ct_generic_timeout = 600*HZ
    "nf_conntrack_generic_timeout": 600,
    # nf_conntrack_proto_gre.c, gre_timeouts[]: UNREPLIED 30*HZ, REPLIED 180*HZ
    "nf_conntrack_gre_timeout": 30,
    "nf_conntrack_gre_timeout_stream": 180,
    # nf_conntrack_standalone.c, nf_conntrack_pernet_init(): sysctl_checksum = 1;
    # log_invalid is zero-initialised
    "nf_conntrack_checksum": 1,
    "nf_conntrack_log_invalid": 0,
    # include/net/tcp.h: TCP_KEEPALIVE_TIME (120*60*HZ), TCP_KEEPALIVE_INTVL (75*HZ),
    # TCP_KEEPALIVE_PROBES 9 (tcp(7) documents the same)
    "tcp_keepalive_time": 7200,
    "tcp_keepalive_intvl": 75,
    "tcp_keepalive_probes": 9,
}

#: Keys that are global (0444 outside the initial network namespace,
#: nf_conntrack_standalone.c): only the host's configuration and reboot decide them.
GLOBAL_KEYS = ("nf_conntrack_max", "nf_conntrack_buckets", "nf_conntrack_expect_max")

#: The table-size keys: a reboot that loses them resizes the table.
TABLE_KEYS = ("nf_conntrack_max", "nf_conntrack_buckets")

#: udp_timeouts[UDP_CT_REPLIED] is 120*HZ in current kernels and was 180*HZ in 5.18 and
#: before; ct-tune has not pinned the release in between, so 5.19 is not judged.
UDP_STREAM_120_SINCE = (6, 0)
UDP_STREAM_180_UNTIL = (5, 18)


def normalize(value: Any) -> int | str:
    """A value as the kernel compares it: an integer when it reads as one, else the text
    with runs of whitespace collapsed (multi-value keys are written tab-separated)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    text = " ".join(str(value).split())
    try:
        return int(text)
    except ValueError:
        return text


def same(a: Any, b: Any) -> bool:
    """Whether a configured and a live value are the same setting."""
    return normalize(a) == normalize(b)


def _assignments(persist: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return list(persist.get("assignments") or []) if persist else []


def _winners(persist: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The assignment boot applies for each key: the last one read."""
    out: dict[str, Mapping[str, Any]] = {}
    for a in _assignments(persist):
        out[a["key"]] = a
    return out


def where(persist: Mapping[str, Any] | None, a: Mapping[str, Any]) -> dict[str, Any]:
    """Where an assignment is, as the admin edits it: Debian's and RHEL's
    /etc/sysctl.d/99-sysctl.conf is a link to /etc/sysctl.conf, so the line is in
    /etc/sysctl.conf, read ``via`` the link (None when the file is no link)."""
    target = ((persist or {}).get("links") or {}).get(a["file"])
    return {"file": target or a["file"], "line": a["line"], "via": a["file"] if target else None}


def booted_here(conntrack: Mapping[str, Any] | None, short: str) -> bool:
    """Whether boot's sysctl.d gives this key its value in the namespace read.

    Boot applies sysctl.d in the initial network namespace.  Elsewhere (a container,
    'ip netns exec') only the global keys are the host's; every per-namespace key
    starts from the kernel default when the namespace is created (each protocol's
    *_init_net(), e.g. nf_conntrack_tcp_init_net() copies tcp_timeouts[]), whatever
    the /etc seen from inside says.
    """
    return (conntrack or {}).get("initial_netns") is not False or short in GLOBAL_KEYS


def drift(persist: Mapping[str, Any] | None, sysctl: Mapping[str, Any],
          writable: Mapping[str, Any] | None = None,
          conntrack: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Keys whose value at boot (the winning assignment) is not the live value.

    Either someone changed the key by hand since boot, or the file did not apply:
    the module was not loaded yet, the value was refused, or the file was added
    after boot and never loaded.  Keys that do not exist live (module not loaded,
    a key this kernel lacks) are skipped: there is nothing to compare, and so are
    per-namespace keys outside the initial namespace (see booted_here).
    """
    out = []
    for key, a in sorted(_winners(persist).items()):
        short = short_name(key)
        live = sysctl.get(short)
        if live is None or same(a["value"], live) or not booted_here(conntrack, short):
            continue
        out.append({"key": key, "live": live, "configured": normalize(a["value"]),
                    **where(persist, a),
                    "writable": None if writable is None else writable.get(short)})
    return out


def overridden(persist: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Keys assigned different values by more than one line: the last one read wins at
    boot and the others are dead configuration that misleads whoever reads them."""
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for a in _assignments(persist):
        by_key.setdefault(a["key"], []).append(a)
    out = []
    for key, seq in sorted(by_key.items()):
        win = seq[-1]
        lose = [a for a in seq[:-1] if not same(a["value"], win["value"])]
        if not lose:
            continue
        out.append({
            "key": key,
            "wins": {"value": normalize(win["value"]), **where(persist, win)},
            "loses": [{"value": normalize(a["value"]), **where(persist, a)} for a in lose],
        })
    return out


def _version(host: Mapping[str, Any]) -> tuple[int, ...] | None:
    v = host.get("kernel_version")
    return tuple(int(x) for x in v[:2]) if v else None


def _module_option(persist: Mapping[str, Any] | None, conntrack: Mapping[str, Any],
                   name: str) -> str | None:
    """An ``options nf_conntrack NAME=...`` value that applies at the next load; a built-in
    nf_conntrack reads the kernel command line instead, which ct-tune does not see."""
    if conntrack.get("builtin") is True:
        return None
    entry = ((persist or {}).get("modprobe") or {}).get(name)
    return None if entry is None else str(entry.get("value", ""))


def _int_option(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _bool_option(text: str | None) -> int | None:
    if text is None:
        return None
    return 1 if text.strip().lower() in ("1", "y", "yes", "on", "true") else 0


def boot_defaults(host: Mapping[str, Any], conntrack: Mapping[str, Any],
                  persist: Mapping[str, Any] | None,
                  sysctl: Mapping[str, Any]) -> dict[str, int]:
    """What each key would be after a reboot if no sysctl file set it, where ct-tune can
    ground it: :data:`KERNEL_DEFAULTS`, the UDP stream timeout by release, and the table
    sizes nf_conntrack_init_start() derives from RAM and the module options in modprobe.d
    (hashsize=, expect_hashsize=, acct=, tstamp=).

    Table sizes are left out when they cannot be known: RAM or kernel release unknown,
    an era ct-tune has not pinned (:mod:`ct_tune.kernelmodel`), a pointer size that is
    unknown and matters, or the live table shows max = 8 x buckets (hashsize= given at
    load) while no persisted option explains it (the kernel command line, an initramfs).
    """
    out = dict(KERNEL_DEFAULTS)
    version = _version(host)
    if version is not None and version >= UDP_STREAM_120_SINCE:
        out["nf_conntrack_udp_timeout_stream"] = 120
    elif version is not None and version <= UDP_STREAM_180_UNTIL:
        out["nf_conntrack_udp_timeout_stream"] = 180
    # nf_conntrack_acct.c / nf_conntrack_timestamp.c: sysctl_acct = nf_ct_acct and
    # sysctl_tstamp = nf_ct_tstamp, module parameters that default to false
    out["nf_conntrack_acct"] = _bool_option(_module_option(persist, conntrack, "acct")) or 0
    out["nf_conntrack_timestamp"] = _bool_option(
        _module_option(persist, conntrack, "tstamp")) or 0

    mem, ptr = host.get("mem_total_bytes"), host.get("pointer_size")
    hashsize = _int_option(_module_option(persist, conntrack, "hashsize")) or None
    live_max, live_buckets = sysctl.get("nf_conntrack_max"), sysctl.get("nf_conntrack_buckets")
    unseen_hashsize = (hashsize is None and isinstance(live_max, int)
                       and isinstance(live_buckets, int) and live_buckets > 0
                       and live_max == 8 * live_buckets)
    if mem and version is not None and not unseen_hashsize:
        # the sizes by kernel era (kernelmodel cites each): nf_conntrack_init_start()
        # sizes from totalram_pages() (MemTotal, highmem included); an era ct-tune has
        # not pinned leaves the key out, so nothing claims "a reboot brings back" it
        kernel = host.get("kernel_version")
        expect_hsize = _int_option(_module_option(persist, conntrack, "expect_hashsize"))
        sizes = {
            "nf_conntrack_buckets": kernelmodel.boot_buckets(kernel, mem, ptr, hashsize),
            "nf_conntrack_max": kernelmodel.boot_max(kernel, mem, ptr, hashsize),
            "nf_conntrack_expect_max": kernelmodel.boot_expect_max(kernel, mem, ptr, hashsize,
                                                                   expect_hsize),
        }
        out.update({k: v for k, v in sizes.items() if v is not None})
    return out


def unpersisted(sysctl: Mapping[str, Any], persist: Mapping[str, Any] | None,
                host: Mapping[str, Any], conntrack: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Live values a reboot would lose: not the kernel default, and no file sets the key.

    ``shrinks`` marks a table-size key whose default is smaller than the live value
    (0 is "no limit"): after the reboot the table refuses connections it holds today.
    Global keys are skipped outside the initial network namespace (the host owns them),
    and there no sysctl.d file persists a per-namespace key (see booted_here); keys are
    skipped when no file could set them: nothing persisted (None).
    """
    if persist is None:
        return []
    # an old ip_conntrack_* name sets the key only where this host has it
    old_here = _old_names_here(conntrack)
    configured = {short_name(k) for k in _winners(persist)
                  if (not k.startswith(OLD_PREFIX) or k in old_here
                      or "old_names" not in conntrack)
                  and booted_here(conntrack, short_name(k))}
    defaults = boot_defaults(host, conntrack, persist, sysctl)
    out = []
    for short, default in defaults.items():
        live = sysctl.get(short)
        if live is None or short in configured or same(live, default):
            continue
        if short in GLOBAL_KEYS and conntrack.get("initial_netns") is False:
            continue
        value = normalize(live)
        # max = 0 is "no limit": any default is smaller
        shrinks = short in TABLE_KEYS and isinstance(value, int) and (value == 0
                                                                      or default < value)
        out.append({"key": full_name(short), "live": value, "default": default,
                    "shrinks": bool(shrinks)})
    return sorted(out, key=lambda d: d["key"])


#: Keys that exist only while nf_conntrack is loaded (nf_conntrack_standalone.c), so a
#: systemd-sysctl run before the module loads skips them.
MODULE_KEY_PREFIXES = ("net.netfilter.", "net.nf_conntrack_max")


def early_load(persist: Mapping[str, Any] | None,
               conntrack: Mapping[str, Any]) -> dict[str, Any] | None:
    """Whether nf_conntrack exists when systemd-sysctl applies the configured keys.

    systemd-sysctl runs early in boot; a loadable nf_conntrack usually appears later
    (the firewall, Docker or kube-proxy load it) and the net.netfilter keys do not
    exist yet, so they are skipped with only a debug message (systemd issue #1113).
    ``configured`` lists those keys; ``missing`` is True when there are some, the module
    is not built in, and neither modules-load.d (or /etc/modules) nor a udev rule makes
    them apply.  ``by`` names what loads it early (keys apply), field names avoid dict
    method names so templates can write ``el.configured``.
    """
    if persist is None:
        return None
    keys = sorted(k for k in _winners(persist) if k.startswith(MODULE_KEY_PREFIXES))
    by: list[str] = [e["file"] for e in persist.get("early_load") or []]
    by += list(persist.get("udev_sysctl_rules") or [])
    builtin = conntrack.get("builtin")
    return {"configured": keys, "by": by, "builtin": builtin,
            "missing": bool(keys) and builtin is not True and not by}


#: systemd sysctl.d(5) keys may be glob patterns: they set whatever matches, and a pattern that
#: matches nothing is no error, so a pattern is never "unknown".
GLOB_CHARS = frozenset("*?[")

#: How close a name must be to be offered as "did you mean" (difflib ratio, on the part after
#: the family prefix): typos score 0.85 and above, unrelated names of one family below 0.7.
SUGGEST_CUTOFF = 0.8

#: The common prefix of each family of names; compared whole, every nf_conntrack_* name is
#: "close" to every other (nf_conntrack_helper to nf_conntrack_events: 0.79).
_FAMILIES = ("nf_conntrack_", "tcp_keepalive_")


def _live_keys(sysctl: Mapping[str, Any]) -> set[str]:
    """The full names the live table has, from the short names rules use.

    net.nf_conntrack_max counts as live whenever nf_conntrack_max is.  nf_conntrack registers
    the alias in the initial network namespace only (nf_conntrack_standalone.c); elsewhere
    it is absent, but it names the same global setting as net.netfilter.nf_conntrack_max,
    which is 0444 there.  The name is right and the place is wrong, which sysctl-drift and
    netns-readonly report; "did you mean net.netfilter.nf_conntrack_max" would send the
    admin to a key the container cannot write either.  (The rule context folds both into
    the short name nf_conntrack_max, so the alias could not be told apart anyway.)
    """
    keys = {full_name(short) for short in sysctl}
    if "nf_conntrack_max" in sysctl:
        keys.add("net.nf_conntrack_max")
    return keys


def _old_names_here(conntrack: Mapping[str, Any]) -> set[str]:
    """The old ip_conntrack_* names this host has (facts conntrack.old_names): valid
    sysctl.d keys there, keys the kernel lacks everywhere else."""
    return set(conntrack.get("old_names") or [])


def _judged(key: str, live: set[str]) -> bool:
    """Whether the snapshot can tell that `key` is missing.  The collector reads all of
    net.netfilter but only the three tcp_keepalive_* keys of net.ipv4 (all the kernel has,
    net/ipv4/sysctl_net_ipv4.c), and none of them when net.ipv4 could not be read."""
    if GLOB_CHARS & set(key) or not key.startswith(sysctld.PERSIST_PREFIXES):
        return False
    return not key.startswith("net.ipv4.") or any(k.startswith("net.ipv4.") for k in live)


def _family(short: str) -> str:
    return next((f for f in _FAMILIES if short.startswith(f)), "")


def _suggest(key: str, sysctl: Mapping[str, Any]) -> str | None:
    """The live key `key` was most likely meant to be, or None when nothing is close.

    Names are compared without their family prefix, among live keys of the same family,
    so a removed key (nf_conntrack_helper) gets no suggestion instead of a random sibling.
    """
    import difflib  # only when a configured key is unknown: not on every audit's start-up

    short = short_name(key)
    family = _family(short)
    names = {s[len(family):]: s for s in sysctl if _family(s) == family}
    close = difflib.get_close_matches(short[len(family):], list(names), n=1,
                                      cutoff=SUGGEST_CUTOFF)
    return full_name(names[close[0]]) if close else None


def unknown(persist: Mapping[str, Any] | None, sysctl: Mapping[str, Any],
            conntrack: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Configured keys the running kernel does not have: a typo, or a key a newer kernel
    removed (nf_conntrack_helper in 6.0).  systemd-sysctl cannot write them, logs it and
    goes on, so the setting silently never applies.

    Every assignment is reported, not only the winning one.  systemd-sysctl writes only the
    winner, but procps ``sysctl --system`` writes every line, and either way each line
    naming a missing key is dead configuration the admin has to fix or remove: reporting
    only the winner would hide an earlier misspelt line until the later one is fixed.  Each
    keeps its own ``optional`` ('-' prefix: the admin accepted that it may not exist).

    Empty when nf_conntrack is not loaded: every net.netfilter key is missing then, and the
    module-loaded rule says why.  Glob patterns and keys the snapshot cannot judge (see
    :func:`_judged`) are skipped; net.nf_conntrack_max never counts as missing (see
    :func:`_live_keys`).  In reading order, so the first is the first line boot reads.
    """
    if not conntrack.get("loaded"):
        return []
    live = _live_keys(sysctl) | _old_names_here(conntrack)
    out = []
    for a in _assignments(persist):
        key = a["key"]
        if key in live or not _judged(key, live):
            continue
        if key.startswith(OLD_PREFIX) and "old_names" not in conntrack:
            continue  # a snapshot from before ct-tune looked for the old names
        out.append({"key": key, "configured": normalize(a["value"]), **where(persist, a),
                    "optional": bool(a.get("optional")), "suggestion": _suggest(key, sysctl)})
    return out
