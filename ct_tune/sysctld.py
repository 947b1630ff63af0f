"""What the boot configuration says: sysctl.d, modules-load.d and modprobe.d, parsed.

Pure functions over file names and text; facts.py reads the files under a root
(so a scratch tree or a captured host can stand in for /).  The precedence is
systemd's (sysctl.d(5), modules-load.d(5)): every ``*.conf`` of the directories
below, ordered by file name across all of them; a name in an earlier directory
masks the same name in a later one; within the order the last assignment wins.
procps ``sysctl --system`` then reads /etc/sysctl.conf last, and Debian and RHEL
link /etc/sysctl.d/99-sysctl.conf to it, so it overrides most fragments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

#: Highest precedence first: a same-named file here masks one further down.
SYSCTL_DIRS = ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d",
               "lib/sysctl.d")
SYSCTL_CONF = "etc/sysctl.conf"
MODULES_LOAD_DIRS = ("etc/modules-load.d", "run/modules-load.d", "usr/local/lib/modules-load.d",
                     "usr/lib/modules-load.d", "lib/modules-load.d")
#: Debian's pre-systemd list of modules to load at boot (still honoured by kmod's service).
ETC_MODULES = "etc/modules"
MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d",
                 "usr/lib/modprobe.d", "lib/modprobe.d")
UDEV_DIRS = ("etc/udev/rules.d", "run/udev/rules.d", "usr/local/lib/udev/rules.d",
             "usr/lib/udev/rules.d", "lib/udev/rules.d")


#: Keys whose persistence ct-tune reports: the ones its rules read or recommend.
PERSIST_PREFIXES = ("net.netfilter.nf_conntrack_", "net.nf_conntrack_max",
                    "net.ipv4.tcp_keepalive_", "net.ipv4.netfilter.ip_conntrack_")


class Assignment(NamedTuple):
    key: str
    value: str
    file: str
    line: int
    #: a leading '-': a failure to set it is ignored at boot
    optional: bool


def normalize_key(key: str) -> str:
    """The dotted form of a key: sysctl.d accepts '/' as the separator too
    (net/netfilter/x == net.netfilter.x).  As systemd's sysctl_normalize() does, only a
    key whose first separator is '/' is in that form, and then dots and slashes swap
    (net/ipv4/conf/eth0.100/rp_filter == net.ipv4.conf.eth0/100.rp_filter)."""
    key = key.strip()
    body = key.lstrip("-")
    dashes = key[:len(key) - len(body)]
    if next((c for c in body if c in "./"), None) == "/":
        key = dashes + body.translate(str.maketrans("/.", "./"))
    return key


def parse_sysctl(text: str, file: str) -> list[Assignment]:
    """``key = value`` lines; '#' and ';' start comments; lines without '=' are ignored
    at boot (systemd logs them), so they are here too."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = normalize_key(key)
        optional = key.startswith("-")
        out.append(Assignment(key.lstrip("-"), value.strip(), file, n, optional))
    return out


def ordered(files_by_dir: Mapping[str, Iterable[str]]) -> list[str]:
    """Paths in systemd's reading order, given each directory's ``*.conf`` file names
    (directories in precedence order, highest first)."""
    chosen: dict[str, str] = {}
    for directory, names in files_by_dir.items():
        for name in names:
            if name.endswith(".conf"):
                chosen.setdefault(name, f"{directory}/{name}")
    return [chosen[name] for name in sorted(chosen)]


def effective(assignments: Iterable[Assignment]) -> dict[str, Assignment]:
    """The assignment that wins for each key: the last one read."""
    out: dict[str, Assignment] = {}
    for a in assignments:
        out[a.key] = a
    return out


#: Modules that depend on nf_conntrack (modinfo -F depends): loading one early loads
#: nf_conntrack first, so its keys exist when systemd-sysctl runs.
CONNTRACK_USERS_PREFIXES = ("nf_conntrack", "nf_nat")
CONNTRACK_USERS = frozenset({"xt_conntrack", "xt_state", "xt_CT", "xt_nat", "xt_MASQUERADE",
                             "ipt_MASQUERADE", "ip6t_MASQUERADE", "iptable_nat", "ip6table_nat",
                             "nft_ct", "nft_nat", "nft_masq", "nft_redir", "openvswitch"})


def loads_conntrack(module: str) -> bool:
    """Whether loading `module` loads nf_conntrack (itself or a module that needs it)."""
    name = module.replace("-", "_")
    return name.startswith(CONNTRACK_USERS_PREFIXES) or name in CONNTRACK_USERS


def parse_modules_load(text: str) -> list[str]:
    """Module names, one per line; '#' and ';' start comments."""
    names = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith(";"):
            names.append(line.split()[0])
    return names


def parse_modprobe_options(text: str, module: str) -> dict[str, str]:
    """``options MODULE key=value ...`` lines for one module (later lines win)."""
    opts: dict[str, str] = {}
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "options" and words[1].replace("-", "_") == module:
            for word in words[2:]:
                key, _, value = word.partition("=")
                opts[key] = value
    return opts


def udev_reloads_sysctl(text: str) -> bool:
    """A udev rule that re-runs systemd-sysctl when nf_conntrack appears (the documented
    alternative to loading the module early).  Most files never name nf_conntrack: one
    search of the whole text answers for them (collect reads every rules file)."""
    return "nf_conntrack" in text and any(
        "nf_conntrack" in line and "sysctl" in line and not line.lstrip().startswith("#")
        for line in text.splitlines())


def persistence(assignments: list[Assignment], files: list[str], early: list[dict[str, str]],
                modprobe: Mapping[str, Any], udev: list[str]) -> dict[str, Any]:
    """The ``persist`` facts: every assignment of a key in reading order, the winner per
    key, and what loads nf_conntrack at boot."""
    wins = effective(assignments)
    return {
        "files": files,
        "assignments": [a._asdict() for a in assignments],
        "sysctl": {k: {"value": a.value, "file": a.file, "line": a.line}
                   for k, a in sorted(wins.items())},
        "early_load": early,
        "modprobe": dict(modprobe),
        "udev_sysctl_rules": udev,
    }


def read_after(assignments: Iterable[Mapping[str, Any]], name: str,
               keys: Iterable[str]) -> list[dict[str, Any]]:
    """Assignments of `keys` that boot reads after a sysctl.d fragment called `name`:
    they override it (a later name in any sysctl.d directory, or /etc/sysctl.conf,
    read last by procps and through Debian's 99-sysctl.conf link)."""
    wanted = set(keys)
    out = []
    for a in assignments:
        base = a["file"].rsplit("/", 1)[-1]
        if a["key"] in wanted and base != name and (
                base > name or a["file"] == "/" + SYSCTL_CONF):
            out.append(dict(a))
    return out
