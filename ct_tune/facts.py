"""Read a host's conntrack facts through configurable procfs/sysfs roots.

This is the only module that reads the host for the analyzer.  Every path goes
through :class:`Roots`, so a tree captured elsewhere (``--procfs``/``--sysfs``,
node_exporter's ``--path.procfs`` convention) replays that host exactly.  The
result is a plain JSON-able dict whose layout is documented in
man/ct-tune-json.5 and validated by :mod:`ct_tune.snapshot`.
"""

from __future__ import annotations

import datetime as _dt
import os
import stat as _stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ct_tune import __version__, kernelmodel, parsers, safeio, sysctld
from ct_tune.errors import InputError
from ct_tune.sysctlkeys import short_name

T = TypeVar("T")

NETFILTER_DIR = "sys/net/netfilter"
#: Written by ``ct-tune capture`` under the captured sysfs when the live host had
#: nf_conntrack built in: live, that is told by /sys/module/nf_conntrack existing
#: without initstate, which a tree cannot tell apart from a capture that missed initstate.
BUILTIN_MARKER = "module/nf_conntrack/builtin.ct-tune"
KEEPALIVE_KEYS = ("tcp_keepalive_time", "tcp_keepalive_intvl", "tcp_keepalive_probes")

#: Keys whose value the rules do arithmetic on: a non-integer here is corrupt input.
INTEGER_KEYS_PREFIX = ("nf_conntrack_tcp_timeout_", "nf_conntrack_udp_timeout",
                       "nf_conntrack_icmp", "nf_conntrack_generic_timeout",
                       "nf_conntrack_sctp_timeout_", "nf_conntrack_gre_timeout")
INTEGER_KEYS = {"nf_conntrack_max", "nf_conntrack_count", "nf_conntrack_buckets",
                "nf_conntrack_expect_max", "nf_conntrack_acct", "nf_conntrack_timestamp",
                "nf_conntrack_tcp_loose", "nf_conntrack_tcp_be_liberal",
                *(f"net.ipv4.{k}" for k in KEEPALIVE_KEYS)}


@dataclass(frozen=True)
class Roots:
    """Where the host's procfs and sysfs are mounted (or were captured to)."""

    procfs: Path = Path("/proc")
    sysfs: Path = Path("/sys")
    #: where /etc, /run and /usr/lib are (sysctl.d and friends); None: "/" for the live
    #: host, the capture's own top directory (procfs/..) for a captured tree
    root: Path | None = None

    @property
    def config_root(self) -> Path:
        if self.root is not None:
            return self.root
        return Path("/") if self.live else self.procfs.parent

    def proc(self, rel: str) -> Path:
        return self.procfs / rel

    def sys(self, rel: str) -> Path:
        return self.sysfs / rel

    @property
    def live(self) -> bool:
        """True when reading the running kernel, where write permission can be probed."""
        return self.procfs == Path("/proc") and self.sysfs == Path("/sys")


def _read(path: Path, bound: safeio.Bound = safeio.VALUE) -> str | None:
    """File text, or None when it does not exist or may not be read (not an error:
    many facts are optional, e.g. slabinfo needs root, stat may be compiled out).
    A FIFO, device or directory in its place, or more than `bound`, is an InputError."""
    return safeio.read_text(path, bound, missing_ok=True, denied_ok=True)


def _parse(path: Path, text: str | None, parse: Callable[[str], T]) -> T | None:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as e:
        raise InputError(str(path), str(e)) from None


def _writable(path: Path) -> bool:
    """Whether this namespace may write the sysctl: the owner-write bit of its mode.

    procfs shows sysctls that are read-only in a non-initial network namespace
    as 0444 (nf_conntrack_standalone.c), and a capture keeps that mode, so the
    bit answers the same question live and offline.  A read-only /proc mount (an
    unprivileged container) also makes every key unwritable.
    """
    try:
        st = os.stat(path)
        if not st.st_mode & _stat.S_IWUSR:
            return False
        return not os.statvfs(path).f_flag & os.ST_RDONLY
    except OSError:
        return False


def _readonly_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


#: Where the kernels before the nf_conntrack rename (the ip_conntrack module, 2.6.x) and
#: nf_conntrack's compatibility tables (CONFIG_NF_CONNTRACK_PROC_COMPAT) put the keys.
OLD_NAMES_DIR = "sys/net/ipv4/netfilter"
OLD_PREFIX, NEW_PREFIX = "ip_conntrack_", "nf_conntrack_"


def _old_names(roots: Roots, sysctls: dict[str, dict[str, Any]]) -> None:
    """net.ipv4.netfilter.ip_conntrack_X read as net.netfilter.nf_conntrack_X when the
    modern key does not exist (the ip_conntrack module), with the name it really has
    in ``key``: the plan writes that name, never one the host lacks.  Where both exist
    (the compatibility names) they are the same variable and the modern one is kept."""
    base = roots.proc(OLD_NAMES_DIR)
    try:
        names = sorted(p.name for p in base.iterdir() if p.name.startswith(OLD_PREFIX))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for name in names:
        modern = "net.netfilter." + NEW_PREFIX + name[len(OLD_PREFIX):]
        if modern in sysctls:
            continue
        entry = _sysctl_entry(base / name, modern)
        if entry is not None:
            entry["key"] = "net.ipv4.netfilter." + name
            sysctls[modern] = entry


def _old_name_list(roots: Roots) -> list[str]:
    """The net.ipv4.netfilter.ip_conntrack_* keys this host has: a sysctl.d line naming
    one of them applies, one naming any other is a key the kernel lacks."""
    try:
        return sorted("net.ipv4.netfilter." + p.name for p in roots.proc(OLD_NAMES_DIR).iterdir()
                      if p.name.startswith(OLD_PREFIX))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _readonly_reasons(sysctls: dict[str, dict[str, Any]], kernel: list[int] | None,
                      initial: bool | None) -> None:
    """Why each unwritable key is read-only, told apart (kernelmodel.readonly_reason):
    'read-only-mount', 'kernel' (buckets before 4.7: 0444 in every namespace), 'netns'
    (a global key outside the initial namespace), or 'mode' when only the mode says so."""
    for key, entry in sysctls.items():
        if entry["writable"]:
            continue
        reason = kernelmodel.readonly_reason(short_name(key), False, kernel, initial,
                                             mount_ro=entry.pop("_mount_ro", False))
        entry["readonly"] = reason or "mode"


def _sysctl_entry(path: Path, key: str) -> dict[str, Any] | None:
    text = _read(path)
    if text is None:
        return None
    short = short_name(key)
    if short in INTEGER_KEYS or key in INTEGER_KEYS or short.startswith(INTEGER_KEYS_PREFIX):
        value: Any = _parse(path, text, parsers.parse_int)
    else:
        value = parsers.parse_sysctl_value(text)
    writable = _writable(path)
    out = {"value": value, "writable": writable}
    if not writable and _readonly_mount(path):
        out["_mount_ro"] = True
    return out


def _netfilter_sysctls(roots: Roots) -> dict[str, dict[str, Any]]:
    """Every file under net/netfilter, recursively (nf_log is a directory), unknown keys too."""
    base = roots.proc(NETFILTER_DIR)
    out: dict[str, dict[str, Any]] = {}
    if not base.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        rel = Path(dirpath).relative_to(base)
        for name in sorted(filenames):
            key = ".".join(["net", "netfilter", *rel.parts, name])
            entry = _sysctl_entry(Path(dirpath) / name, key)
            if entry is not None:
                out[key] = entry
    return out


def _host(roots: Roots) -> dict[str, Any]:
    meminfo_path = roots.proc("meminfo")
    meminfo = _parse(meminfo_path, _read(meminfo_path, safeio.PROC_TABLE),
                     parsers.parse_meminfo) or {}
    if meminfo_path.exists() and "MemTotal" not in meminfo:
        raise InputError(str(meminfo_path), "no MemTotal line")
    release = (_read(roots.proc("sys/kernel/osrelease")) or "").strip() or None
    arch, arch_source = _arch(roots, release)
    cpus_path = roots.sys("devices/system/cpu/online")
    cpus = _parse(cpus_path, _read(cpus_path), parsers.parse_cpu_list)
    hostname = (_read(roots.proc("sys/kernel/hostname")) or "").strip() or None
    version = parsers.parse_kernel_version(release) if release else None
    return {
        "hostname": hostname,
        "kernel_release": release,
        "kernel_version": list(version) if version else None,
        "arch": arch,
        "pointer_size": parsers.pointer_size_for_arch(arch) if arch else None,
        # what arch and pointer_size were read from (None: no evidence, both unknown)
        "arch_source": arch_source,
        "distribution": kernelmodel.distribution(release),
        "cpus_online": len(cpus) if cpus else None,
        "mem_total_bytes": meminfo.get("MemTotal"),
        "low_total_bytes": meminfo.get("LowTotal"),
        "uptime_seconds": _uptime(roots),
    }


#: Written by ``ct-tune capture`` beside proc/ and sys/ on kernels without
#: /proc/sys/kernel/arch: the uname(2) machine the live audit used.
MACHINE_FILE = "UNAME_MACHINE"


def machine(roots: Roots) -> str | None:
    """The uname(2) machine of the host roots describe, when known without the arch file:
    the running kernel's own, or the one a capture recorded."""
    if roots.live:
        return os.uname().machine
    path = roots.procfs.parent / MACHINE_FILE
    text = (_read(path) or "").strip()
    if text and (len(text) > 32 or not text.replace("_", "").replace("-", "").isalnum()):
        raise InputError(str(path), f"not a machine name: {text[:40]!r}")
    return text or None


def _arch(roots: Roots, release: str | None) -> tuple[str | None, str | None]:
    """The kernel's machine name and where it was read.

    /proc/sys/kernel/arch exists only since 6.1 (kernel/utsname_sysctl.c).  Before it
    the live host answers through uname(2), the same UTS field; a captured tree has
    only the release string, whose RHEL/Debian suffix names the machine
    (3.10.0-1160.el7.x86_64, 4.19.0-27-amd64).  With none of them the arch and the
    pointer size stay unknown: rules say so instead of assuming 64-bit.
    """
    path = roots.proc("sys/kernel/arch")
    arch = (_read(path) or "").strip() or None
    if arch:
        return arch, str(path)
    if roots.live:
        return os.uname().machine, "uname(2) machine"
    captured = roots.procfs.parent / MACHINE_FILE
    arch = machine(roots)
    if arch:
        return arch, f"{captured} (uname(2) machine at capture)"
    arch = kernelmodel.arch_from_release(release)
    if arch:
        return arch, f"{roots.proc('sys/kernel/osrelease')} suffix ({release})"
    return None, None


def _uptime(roots: Roots) -> int | None:
    """Whole seconds since boot, so since-boot counter totals can be read as rates.

    The first field of /proc/uptime: a captured tree keeps the uptime it was
    captured at (a boot time would make a replay's uptime grow by the day).
    """
    path = roots.proc("uptime")
    return _parse(path, _read(path), parsers.parse_uptime)


def _slab_object_size(roots: Roots) -> tuple[int | None, str | None]:
    """Size of one nf_conntrack slab object, including alignment padding.

    /proc/slabinfo's objsize column (needs root) is what each entry really
    occupies; sysfs slab_size is the same number, object_size the unpadded
    struct, used only as a last resort.
    """
    path = roots.proc("slabinfo")
    size = _parse(path, _read(path, safeio.PROC_TABLE), parsers.parse_slabinfo)
    if size:
        return size, str(path)
    for name in ("slab_size", "object_size"):
        path = roots.sys(f"kernel/slab/nf_conntrack/{name}")
        size = _parse(path, _read(path), parsers.parse_int)
        if size:
            return size, str(path)
    return None, None


def _initial_netns(roots: Roots, sysctls: dict[str, dict[str, Any]]) -> bool:
    """Whether this is the initial network namespace.

    net.nf_conntrack_max is registered in init_net only (nf_conntrack_standalone.c),
    in every era, so its absence next to net.netfilter.nf_conntrack_max says "another
    namespace".  A writable net.netfilter.nf_conntrack_max would not: before 5.13
    (commit 2671fa4dc010) a container could write it too (and change every
    namespace's limit).  The old ip_conntrack module has no namespaces at all.
    """
    if roots.proc("sys/net/nf_conntrack_max").exists():
        return True
    entry = sysctls["net.netfilter.nf_conntrack_max"]
    return entry.get("key", "").startswith("net.ipv4.netfilter.ip_conntrack_")


def _conntrack(roots: Roots, sysctls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    loaded = "net.netfilter.nf_conntrack_max" in sysctls
    hs_path = roots.sys("module/nf_conntrack/parameters/hashsize")
    hashsize = _parse(hs_path, _read(hs_path), parsers.parse_int)
    size, size_source = _slab_object_size(roots) if loaded else (None, None)
    initial = _initial_netns(roots, sysctls) if loaded else None
    # built in: modules-load.d and modprobe.d options do nothing
    builtin = builtin_module(roots, loaded)
    return {
        "loaded": loaded,
        "builtin": builtin,
        "old_names": _old_name_list(roots),
        "initial_netns": initial,
        "hashsize_param": hashsize,
        "slab_object_size": size,
        "slab_object_size_source": size_source,
    }


def builtin_module(roots: Roots, loaded: bool) -> bool | None:
    """Whether nf_conntrack is built into the kernel (None: cannot tell).

    A loadable module has /sys/module/nf_conntrack/initstate; a built-in one has the
    directory (for its parameters) without it.  A captured tree says so with
    BUILTIN_MARKER, so its replay decides as the live host did.
    """
    if roots.sys("module/nf_conntrack/initstate").exists():
        return False
    if not loaded:
        return None
    if roots.live:
        return True if roots.sys("module/nf_conntrack").exists() else None
    return True if (_read(roots.sys(BUILTIN_MARKER)) or "").strip() == "1" else None


def _stat_table(roots: Roots) -> dict[str, Any] | None:
    path = roots.proc("net/stat/nf_conntrack")
    parsed = _parse(path, _read(path, safeio.PROC_TABLE), parsers.parse_conntrack_stat)
    if parsed is None:
        return None
    return {"source": str(path), **parsed}


def _conf_names(directory: Path) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir() if p.name.endswith(".conf"))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def in_root(root: Path, rel: str) -> Path:
    """root/rel with symlinks resolved inside root, as a chroot would: an absolute link
    target (99-sysctl.conf -> /etc/sysctl.conf, a mask -> /dev/null) means root/target,
    not this machine's file, and '..' stops at root."""
    parts = [p for p in Path(rel).parts if p not in ("/", ".")]
    here, hops = root, 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            here = here.parent if here != root else root
            continue
        nxt = here / part
        if nxt.is_symlink() and hops < 40:
            hops += 1
            target = os.readlink(nxt)
            if os.path.isabs(target):
                here = root
            parts = [p for p in Path(target).parts if p not in ("/", ".")] + parts
            continue
        here = nxt
    return here


def _read_conf(root: Path, real: Path) -> str | None:
    """A boot configuration file (resolved by in_root); one masked by a link to /dev/null
    reads as empty, as systemd and udev take it (any other device is refused)."""
    if real == root / "dev/null":
        return ""
    return _read(real, safeio.CONFIG)


def _persistence(root: Path) -> dict[str, Any]:
    """sysctl.d/sysctl.conf assignments of conntrack keys, in systemd's reading order, and
    what loads nf_conntrack at boot (modules-load.d, /etc/modules, a udev rule)."""
    files = sysctld.ordered({d: _conf_names(in_root(root, d)) for d in sysctld.SYSCTL_DIRS})
    files.append(sysctld.SYSCTL_CONF)
    assignments, read, seen = [], [], set()
    links: dict[str, str] = {}
    for rel in files:
        real = in_root(root, rel)
        if real == root / "dev/null":
            continue  # masked
        text = _read(real, safeio.CONFIG)
        # a link to /etc/sysctl.conf (Debian's 99-sysctl.conf) is read where it sorts
        if text is None or (rel == sysctld.SYSCTL_CONF and real in seen):
            continue
        seen.add(real)
        read.append(rel)
        if real != root / rel:
            links["/" + rel] = "/" + real.relative_to(root).as_posix()
        assignments += [a for a in sysctld.parse_sysctl(text, "/" + rel)
                        if a.key.startswith(sysctld.PERSIST_PREFIXES)]
    early, seen = [], set()
    loads = sysctld.ordered({d: _conf_names(in_root(root, d)) for d in sysctld.MODULES_LOAD_DIRS})
    for rel in [*loads, sysctld.ETC_MODULES]:
        real = in_root(root, rel)
        text = None if real in seen else _read_conf(root, real)
        seen.add(real)  # Debian links modules-load.d/modules.conf to /etc/modules
        users = [m for m in sysctld.parse_modules_load(text or "") if sysctld.loads_conntrack(m)]
        if users:
            early.append({"module": users[0], "file": "/" + rel})
    modprobe: dict[str, Any] = {}
    for rel in sysctld.ordered({d: _conf_names(in_root(root, d)) for d in sysctld.MODPROBE_DIRS}):
        text = _read_conf(root, in_root(root, rel))
        opts = sysctld.parse_modprobe_options(text, "nf_conntrack") if text else {}
        for key, value in opts.items():
            modprobe[key] = {"value": value, "file": "/" + rel}
    udev, rules = [], {}
    for d in sysctld.UDEV_DIRS:  # a same-named rules file higher up masks one further down
        for p in _listdir(in_root(root, d)):
            if p.name.endswith(".rules"):
                rules.setdefault(p.name, f"{d}/{p.name}")
    for name in sorted(rules):
        text = _read_conf(root, in_root(root, rules[name]))
        if text and sysctld.udev_reloads_sysctl(text):
            udev.append("/" + rules[name])
    return {"root": str(root), "links": links,
            **sysctld.persistence(assignments, ["/" + f for f in read], early, modprobe, udev)}


def _listdir(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def collect(roots: Roots, now: _dt.datetime | None = None) -> dict[str, Any]:
    """All facts the rules need, as a versioned JSON-able dict (see ct_tune.snapshot)."""
    from ct_tune.snapshot import SCHEMA_NAME, SCHEMA_VERSION

    sysctls = _netfilter_sysctls(roots)
    _old_names(roots, sysctls)
    legacy = _sysctl_entry(roots.proc("sys/net/nf_conntrack_max"), "net.nf_conntrack_max")
    if legacy is not None:
        sysctls["net.nf_conntrack_max"] = legacy
    for key in KEEPALIVE_KEYS:
        entry = _sysctl_entry(roots.proc(f"sys/net/ipv4/{key}"), f"net.ipv4.{key}")
        if entry is not None:
            sysctls[f"net.ipv4.{key}"] = entry
    when = now or _dt.datetime.now(_dt.UTC)
    host = _host(roots)
    conntrack = _conntrack(roots, sysctls)
    _readonly_reasons(sysctls, host["kernel_version"], conntrack["initial_netns"])
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "collected_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {"procfs": str(roots.procfs), "sysfs": str(roots.sysfs), "live": roots.live,
                   # apply needs root; a read-only key is told apart from this
                   "root": os.geteuid() == 0 if roots.live else None},
        "host": host,
        "conntrack": conntrack,
        "sysctl": sysctls,
        "stat": _stat_table(roots),
        "persist": _persistence(roots.config_root),
    }
