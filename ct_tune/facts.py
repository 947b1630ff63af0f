"""Read a host's conntrack facts through configurable procfs/sysfs roots.

This is the only module that reads the host for the analyzer.  Every path goes
through :class:`Roots`, so a tree captured elsewhere (``--procfs``/``--sysfs``,
node_exporter's ``--path.procfs`` convention) replays that host exactly.  The
result is a plain JSON-able dict whose layout is documented in
man/ct-tune-json.5 and validated by :mod:`ct_tune.snapshot`.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import stat as _stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ct_tune import __version__, kernelmodel, nsview, parsers, safeio, sysctld
from ct_tune.errors import InputError
from ct_tune.sysctlkeys import short_name, spec

T = TypeVar("T")

NETFILTER_DIR = "sys/net/netfilter"
#: Written by ``ct-tune capture`` under the captured sysfs when the live host had
#: nf_conntrack built in: live, that is told by /sys/module/nf_conntrack existing
#: without initstate, which a tree cannot tell apart from a capture that missed initstate.
BUILTIN_MARKER = "module/nf_conntrack/builtin.ct-tune"
#: under a captured tree's proc/: the live host's scan of the other namespaces
#: (ct_tune.nsview), so the replay audits what the live host saw
NAMESPACES_FILE = "ct-tune.namespaces.json"
KEEPALIVE_KEYS = ("tcp_keepalive_time", "tcp_keepalive_intvl", "tcp_keepalive_probes")

#: Keys whose value the rules do arithmetic on: a non-integer here is corrupt input.
INTEGER_KEYS_PREFIX = ("nf_conntrack_tcp_timeout_", "nf_conntrack_udp_timeout",
                       "nf_conntrack_icmp", "nf_conntrack_generic_timeout",
                       "nf_conntrack_sctp_timeout_", "nf_conntrack_gre_timeout")
INTEGER_KEYS = {"nf_conntrack_max", "nf_conntrack_count", "nf_conntrack_buckets",
                "nf_conntrack_expect_max", "nf_conntrack_acct", "nf_conntrack_timestamp",
                "nf_conntrack_tcp_loose", "nf_conntrack_tcp_be_liberal",
                *(f"net.ipv4.{k}" for k in KEEPALIVE_KEYS)}


class Roots(NamedTuple):
    """Where the host's procfs and sysfs are mounted (or were captured to).  A NamedTuple
    rather than a frozen dataclass, as the other value types on collect's path: building
    a dataclass costs about a millisecond of every start-up."""

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


def _read(path: Path | str, bound: safeio.Bound = safeio.VALUE) -> str | None:
    """File text, or None when it does not exist or may not be read (not an error:
    many facts are optional, e.g. slabinfo needs root, stat may be compiled out).
    A FIFO, device or directory in its place, or more than `bound`, is an InputError."""
    return safeio.read_text(path, bound, missing_ok=True, denied_ok=True)


class Problems:
    """The input problems of one collection, all of them rather than the first.

    A corrupt or unreadable file does not stop collecting: its facts are set to None
    and the problem is kept here as ``{path, problem, facts}``, ``facts`` listing the
    key paths into the facts of every value set to None because of it (empty when
    nothing was).  collect() stores the list as facts["errors"] (man/ct-tune-json.5);
    the engine turns the findings that needed such a fact into *unknown* ones.
    """

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, path: Path | str, problem: str, *facts: tuple[str, ...]) -> None:
        self.items.append({"path": str(path), "problem": problem,
                           "facts": [list(f) for f in facts]})

    def read(self, path: Path, *facts: tuple[str, ...],
             bound: safeio.Bound = safeio.VALUE) -> str | None:
        """_read(path), a problem recorded (and None returned) instead of raised."""
        try:
            return _read(path, bound)
        except InputError as e:
            self.add(e.path, e.problem, *facts)
            return None

    def parse(self, path: Path, parse: Callable[[str], T], *facts: tuple[str, ...],
              bound: safeio.Bound = safeio.VALUE) -> T | None:
        """parse(text of path); None when missing, corrupt or unreadable (recorded)."""
        text = self.read(path, *facts, bound=bound)
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as e:
            self.add(path, str(e), *facts)
            return None


def _parse(path: Path, text: str | None, parse: Callable[[str], T]) -> T | None:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as e:
        raise InputError(str(path), str(e)) from None


def in_range(low: int, high: int, what: str) -> Callable[[int], int]:
    """A check for parse results: a value outside low..high is corrupt, not a fact."""
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high:,}: not a valid {what}")
        return value
    return check


def _then(parse: Callable[[str], int], check: Callable[[int], int]) -> Callable[[str], int]:
    return lambda text: check(parse(text))


def _writable(path: Path | str) -> bool:
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


def _readonly_mount(path: Path | str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


#: Where the kernels before the nf_conntrack rename (the ip_conntrack module, 2.6.x) and
#: nf_conntrack's compatibility tables (CONFIG_NF_CONNTRACK_PROC_COMPAT) put the keys.
OLD_NAMES_DIR = "sys/net/ipv4/netfilter"
OLD_PREFIX, NEW_PREFIX = "ip_conntrack_", "nf_conntrack_"


def _old_names(roots: Roots, sysctls: dict[str, dict[str, Any]], problems: Problems) -> None:
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
        entry = _sysctl_entry(base / name, modern, problems)
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


def _int_value(key: str, text: str) -> int:
    """An integer key's value, range-checked against what the kernel's type can hold."""
    value = parsers.parse_int(text)
    keyspec = spec(key)
    problem = keyspec.read_problem(value) if keyspec else None
    if problem:
        raise ValueError(problem)
    return value


def is_integer_key(key: str) -> bool:
    """Keys whose value is one integer: anything else read from them is corrupt."""
    short = short_name(key)
    return (spec(key) is not None or short in INTEGER_KEYS or key in INTEGER_KEYS
            or short.startswith(INTEGER_KEYS_PREFIX))


def _sysctl_entry(path: Path | str, key: str, problems: Problems) -> dict[str, Any] | None:
    """{value, writable}; a file that exists but cannot be read or holds a corrupt value
    is kept with value None (its problem recorded), so the key still counts as present."""
    fact = ("sysctl", key)
    try:
        text = _read(path)
    except InputError as e:
        problems.add(e.path, e.problem, fact)
        return {"value": None, "writable": _writable(path)}
    if text is None:
        return None
    value: Any
    if is_integer_key(key):
        try:
            value = _int_value(key, text)
        except ValueError as e:
            problems.add(path, str(e), fact)
            value = None
    else:
        value = parsers.parse_sysctl_value(text)
    writable = _writable(path)
    out = {"value": value, "writable": writable}
    if not writable and _readonly_mount(path):
        out["_mount_ro"] = True
    return out


def _netfilter_sysctls(roots: Roots, problems: Problems) -> dict[str, dict[str, Any]]:
    """Every file under net/netfilter, recursively (nf_log is a directory), unknown keys too."""
    base = roots.proc(NETFILTER_DIR)
    out: dict[str, dict[str, Any]] = {}
    if not base.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        rel = Path(dirpath).relative_to(base)
        for name in [d for d in dirnames if not rel.parts and is_integer_key(d)]:
            # a key's file is never a directory (nf_log is the one directory there): read
            # as a folder of keys, the key would just look absent, and its rules green
            key = f"net.netfilter.{name}"
            problems.add(Path(dirpath) / name, "not a regular file (directory)",
                         ("sysctl", key))
            out[key] = {"value": None, "writable": False}
            dirnames.remove(name)
        for name in sorted(filenames):
            key = ".".join(["net", "netfilter", *rel.parts, name])
            entry = _sysctl_entry(os.path.join(dirpath, name), key, problems)  # str: cheaper
            if entry is not None:
                out[key] = entry
    return out


def _host(roots: Roots, problems: Problems) -> dict[str, Any]:
    meminfo_path = roots.proc("meminfo")
    mem_facts = (("host", "mem_total_bytes"), ("host", "low_total_bytes"))
    meminfo = problems.parse(meminfo_path, parsers.parse_meminfo, *mem_facts,
                             bound=safeio.PROC_TABLE) or {}
    if meminfo and "MemTotal" not in meminfo:
        problems.add(meminfo_path, "no MemTotal line", *mem_facts)
    for name in ("MemTotal", "LowTotal"):
        if name in meminfo and not 0 < meminfo[name] < 2**63:
            problems.add(meminfo_path, f"{name} of {meminfo[name]} bytes is not a memory size",
                         *mem_facts)
            meminfo = {}
    release = (problems.read(roots.proc("sys/kernel/osrelease"), ("host", "kernel_release"))
               or "").strip() or None
    arch, arch_source = _arch(roots, release, problems)
    cpus = problems.parse(roots.sys("devices/system/cpu/online"), parsers.parse_cpu_list,
                          ("host", "cpus_online"))
    hostname = (problems.read(roots.proc("sys/kernel/hostname"), ("host", "hostname"))
                or "").strip() or None
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
        "uptime_seconds": _uptime(roots, problems),
        # whether this namespace routes packets (IPv4 or IPv6): the established timeout's
        # floor is then RFC 5382 REQ-5's, not this host's own keepalive (None: unknown)
        "forwarding": _forwarding(roots, problems),
    }


#: The forwarding switches, IPv4 and IPv6 (net/ipv4/sysctl_net_ipv4.c ip_forward,
#: net/ipv6/addrconf.c conf/all/forwarding); per network namespace.
FORWARDING_FILES = ("sys/net/ipv4/ip_forward", "sys/net/ipv6/conf/all/forwarding")


def _forwarding(roots: Roots, problems: Problems) -> bool | None:
    """True when either family forwards, False when both that can be read do not, None
    when neither can be read (an old capture) or one is corrupt (recorded)."""
    seen = None
    for rel in FORWARDING_FILES:
        path = roots.proc(rel)
        text = problems.read(path, ("host", "forwarding"))
        if text is None:
            continue
        value = text.strip()
        if not value.isdigit():
            problems.add(path, f"expected 0 or 1, got {value[:40]!r}", ("host", "forwarding"))
            return None
        if int(value):
            return True
        seen = False
    return seen


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


def _arch(roots: Roots, release: str | None, problems: Problems
          ) -> tuple[str | None, str | None]:
    """The kernel's machine name and where it was read.

    /proc/sys/kernel/arch exists only since 6.1 (kernel/utsname_sysctl.c).  Before it
    the live host answers through uname(2), the same UTS field; a captured tree has
    only the release string, whose RHEL/Debian suffix names the machine
    (3.10.0-1160.el7.x86_64, 4.19.0-27-amd64).  With none of them the arch and the
    pointer size stay unknown: rules say so instead of assuming 64-bit.
    """
    path = roots.proc("sys/kernel/arch")
    arch = (problems.read(path, ("host", "arch")) or "").strip() or None
    if arch:
        return arch, str(path)
    if roots.live:
        return os.uname().machine, "uname(2) machine"
    captured = roots.procfs.parent / MACHINE_FILE
    try:
        arch = machine(roots)
    except InputError as e:
        problems.add(e.path, e.problem, ("host", "arch"))
        arch = None
    if arch:
        return arch, f"{captured} (uname(2) machine at capture)"
    arch = kernelmodel.arch_from_release(release)
    if arch:
        return arch, f"{roots.proc('sys/kernel/osrelease')} suffix ({release})"
    return None, None


def _uptime(roots: Roots, problems: Problems) -> int | None:
    """Whole seconds since boot, so since-boot counter totals can be read as rates.

    The first field of /proc/uptime: a captured tree keeps the uptime it was
    captured at (a boot time would make a replay's uptime grow by the day).
    """
    return problems.parse(roots.proc("uptime"), parsers.parse_uptime, ("host", "uptime_seconds"))


_SLAB_SIZE = in_range(1, 1 << 20, "slab object size in bytes")


def _slab_object_size(roots: Roots, problems: Problems) -> tuple[int | None, str | None]:
    """Size of one nf_conntrack slab object, including alignment padding.

    /proc/slabinfo's objsize column (needs root) is what each entry really
    occupies; sysfs slab_size is the same number, object_size the unpadded
    struct, used only as a last resort.  A corrupt source is reported even when
    another one gives the size.
    """
    fact = ("conntrack", "slab_object_size")
    tried = Problems()
    path = roots.proc("slabinfo")
    size = tried.parse(path, lambda t: (lambda v: _SLAB_SIZE(v) if v is not None else None)(
        parsers.parse_slabinfo(t)), bound=safeio.PROC_TABLE)
    found: tuple[int | None, str | None] = (size, str(path)) if size else (None, None)
    if not size:
        for name in ("slab_size", "object_size"):
            path = roots.sys(f"kernel/slab/nf_conntrack/{name}")
            size = tried.parse(path, _then(parsers.parse_int, _SLAB_SIZE))
            if size:
                found = (size, str(path))
                break
    for item in tried.items:
        problems.add(item["path"], item["problem"], *([] if found[0] else [fact]))
    return found


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
    entry = sysctls.get("net.netfilter.nf_conntrack_max") or {}
    return entry.get("key", "").startswith("net.ipv4.netfilter.ip_conntrack_")


def _conntrack(roots: Roots, sysctls: dict[str, dict[str, Any]],
               problems: Problems) -> dict[str, Any]:
    loaded = "net.netfilter.nf_conntrack_max" in sysctls
    others = sorted(k for k in sysctls if k.startswith("net.netfilter.nf_conntrack_"))
    if not loaded and others:
        # every nf_conntrack_* key is registered with nf_conntrack_max (one ctl_table in
        # nf_conntrack_standalone.c): others without it are an incomplete tree, never a
        # host without conntrack, whose "nothing to tune" would read as OK
        problems.add(roots.proc("sys/net/netfilter/nf_conntrack_max"),
                     f"missing while {others[0]} is present (incomplete procfs tree)",
                     ("sysctl", "net.netfilter.nf_conntrack_max"))
        loaded = True
    hashsize = problems.parse(roots.sys("module/nf_conntrack/parameters/hashsize"),
                              _then(parsers.parse_int, in_range(0, 2**32 - 1, "hash size")),
                              ("conntrack", "hashsize_param"))
    size, size_source = _slab_object_size(roots, problems) if loaded else (None, None)
    initial = _initial_netns(roots, sysctls) if loaded else None
    # built in: modules-load.d and modprobe.d options do nothing
    builtin = builtin_module(roots, loaded, problems)
    return {
        "loaded": loaded,
        "builtin": builtin,
        "old_names": _old_name_list(roots),
        "initial_netns": initial,
        "hashsize_param": hashsize,
        "slab_object_size": size,
        "slab_object_size_source": size_source,
    }


def builtin_module(roots: Roots, loaded: bool, problems: Problems | None = None) -> bool | None:
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
    marker = (problems or Problems()).read(roots.sys(BUILTIN_MARKER), ("conntrack", "builtin"))
    return True if (marker or "").strip() == "1" else None


def _namespaces(roots: Roots, loaded: bool, problems: Problems) -> dict[str, Any] | None:
    """The other namespaces' tables: scanned on the live host, read back from a
    capture's NAMESPACES_FILE (validated as the snapshot's field is)."""
    if not loaded:
        return None
    if roots.live:
        return nsview.scan(roots.procfs)
    path = roots.proc(NAMESPACES_FILE)
    text = problems.read(path, ("namespaces",), bound=safeio.PROC_TABLE)
    if text is None:
        return None
    from ct_tune import snapshot

    try:
        data = json.loads(text)
    except ValueError:
        problems.add(path, "not JSON", ("namespaces",))
        return None
    wrong: list[tuple[str, str]] = []
    snapshot.check_field("namespaces", data, wrong)
    if wrong:
        problems.add(path, f"{wrong[0][0]}: {wrong[0][1]}", ("namespaces",))
        return None
    return data


def _stat_table(roots: Roots, problems: Problems) -> dict[str, Any] | None:
    path = roots.proc("net/stat/nf_conntrack")
    parsed = problems.parse(path, parsers.parse_conntrack_stat, ("stat",),
                            bound=safeio.PROC_TABLE)
    if parsed is None:
        return None
    return {"source": str(path), **parsed}


def _conf_names(directory: Path) -> list[str]:
    return sorted(name for name in _listdir(directory) if name.endswith(".conf"))


def in_root(root: Path, rel: str) -> Path:
    """root/rel with symlinks resolved inside root, as a chroot would: an absolute link
    target (99-sysctl.conf -> /etc/sysctl.conf, a mask -> /dev/null) means root/target,
    not this machine's file, and '..' stops at root.  On strings, not Path objects: collect
    resolves every boot file (a hundred udev rules) this way, at every start-up."""
    top = os.fspath(root)
    parts = _components(rel)
    here, hops = top, 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            here = os.path.dirname(here) if here != top else top
            continue
        nxt = os.path.join(here, part)
        if _is_link(nxt) and hops < 40:
            hops += 1
            target = os.readlink(nxt)
            if os.path.isabs(target):
                here = top
            parts = _components(target) + parts
            continue
        here = nxt
    return Path(here)


def _components(rel: str) -> list[str]:
    """The names along a path, without its slashes and '.' (a leading '//' too, which
    Path keeps as a root of its own: the link target //etc/x is root/etc/x)."""
    return [p for p in rel.split("/") if p not in ("", ".")]


def _is_link(path: str) -> bool:
    """Path.is_symlink of a string: False when missing, an OSError such as EACCES raised
    (writers' _at takes an unsearchable /proc/PID/root as missing)."""
    try:
        return _stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return False
        raise
    except ValueError:  # a NUL in the name
        return False


def _read_conf(root: Path, real: Path, problems: Problems) -> str | None:
    """A boot configuration file (resolved by in_root); one masked by a link to /dev/null
    reads as empty, as systemd and udev take it (any other device is refused).  One that
    cannot be read leaves the boot configuration unknown (a problem, not an exception)."""
    if real == root / "dev/null":
        return ""
    return problems.read(real, ("persist",), bound=safeio.CONFIG)


def _persistence(root: Path, problems: Problems | None = None) -> dict[str, Any]:
    """sysctl.d/sysctl.conf assignments of conntrack keys, in systemd's reading order, and
    what loads nf_conntrack at boot (modules-load.d, /etc/modules, a udev rule)."""
    problems = problems if problems is not None else Problems()
    fact = ("persist",)  # a boot file that cannot be read leaves the boot config unknown
    files = sysctld.ordered({d: _conf_names(in_root(root, d)) for d in sysctld.SYSCTL_DIRS})
    files.append(sysctld.SYSCTL_CONF)
    assignments, read, seen = [], [], set()
    links: dict[str, str] = {}
    for rel in files:
        real = in_root(root, rel)
        if real == root / "dev/null":
            continue  # masked
        text = problems.read(real, fact, bound=safeio.CONFIG)
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
        text = None if real in seen else _read_conf(root, real, problems)
        seen.add(real)  # Debian links modules-load.d/modules.conf to /etc/modules
        users = [m for m in sysctld.parse_modules_load(text or "") if sysctld.loads_conntrack(m)]
        if users:
            early.append({"module": users[0], "file": "/" + rel})
    modprobe: dict[str, Any] = {}
    for rel in sysctld.ordered({d: _conf_names(in_root(root, d)) for d in sysctld.MODPROBE_DIRS}):
        text = _read_conf(root, in_root(root, rel), problems)
        opts = sysctld.parse_modprobe_options(text, "nf_conntrack") if text else {}
        for key, value in opts.items():
            modprobe[key] = {"value": value, "file": "/" + rel}
    udev, rules = [], {}
    for d in sysctld.UDEV_DIRS:  # a same-named rules file higher up masks one further down
        for name in _listdir(in_root(root, d)):
            if name.endswith(".rules"):
                rules.setdefault(name, f"{d}/{name}")
    for name in sorted(rules):
        text = _read_conf(root, in_root(root, rules[name]), problems)
        if text and sysctld.udev_reloads_sysctl(text):
            udev.append("/" + rules[name])
    return {"root": str(root), "links": links,
            **sysctld.persistence(assignments, ["/" + f for f in read], early, modprobe, udev)}


def _listdir(directory: Path) -> list[str]:
    """The names in a directory (Path.iterdir without a Path per entry: a hundred udev
    rules); none when it is missing, not a directory or not readable."""
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def check_roots(roots: Roots) -> None:
    """Refuse a --procfs/--sysfs that is not one (a mistyped capture path): read as an
    empty host it would audit as OK.  Every procfs since 2.6 has meminfo and sys/kernel,
    every sysfs has devices/; so does every tree ``capture`` writes."""
    # exists, not is_file: a FIFO or directory in its place is refused when it is read
    if not (roots.procfs / "meminfo").exists() or not (roots.procfs / "sys/kernel").is_dir():
        what = "does not exist" if not roots.procfs.exists() else "has no meminfo or sys/kernel"
        raise InputError(str(roots.procfs), f"not a procfs (--procfs): {what}")
    if not (roots.sysfs / "devices").is_dir():
        what = "does not exist" if not roots.sysfs.exists() else "has no devices/"
        raise InputError(str(roots.sysfs), f"not a sysfs (--sysfs): {what}")


def collect(roots: Roots, now: _dt.datetime | None = None) -> dict[str, Any]:
    """All facts the rules need, as a versioned JSON-able dict (see ct_tune.snapshot).

    Raises InputError only for roots that are not a procfs/sysfs; every corrupt or
    unreadable file is listed in facts["errors"] and its facts are None.
    """
    from ct_tune.snapshot import SCHEMA_NAME, SCHEMA_VERSION

    check_roots(roots)
    problems = Problems()
    sysctls = _netfilter_sysctls(roots, problems)
    _old_names(roots, sysctls, problems)
    legacy = _sysctl_entry(roots.proc("sys/net/nf_conntrack_max"), "net.nf_conntrack_max",
                           problems)
    if legacy is not None:
        sysctls["net.nf_conntrack_max"] = legacy
    for key in KEEPALIVE_KEYS:
        entry = _sysctl_entry(roots.proc(f"sys/net/ipv4/{key}"), f"net.ipv4.{key}", problems)
        if entry is not None:
            sysctls[f"net.ipv4.{key}"] = entry
    when = now or _dt.datetime.now(_dt.UTC)
    host = _host(roots, problems)
    conntrack = _conntrack(roots, sysctls, problems)
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
        "stat": _stat_table(roots, problems),
        # the other network namespaces' tables (count and max check are per namespace)
        "namespaces": _namespaces(roots, conntrack["loaded"], problems),
        "persist": _persistence(roots.config_root, problems),
        "errors": problems.items,
    }
