"""Who else writes the conntrack keys, and which boot system applies sysctl.d: read from
the host through the same roots as :mod:`ct_tune.facts`.

The evidence is what a captured tree can hold: /proc/PID/cmdline of a kube-proxy (or
k3s) process, its config file (read through /proc/PID/root, the process's own view,
else under the configuration root), the container image name containerd recorded for
it, /.dockerenv and /run/containerd, /proc/1/comm and /run/systemd/system, and
/etc/os-release or /etc/openwrt_release.  Everything is bounded (PIDs scanned, bytes
read) and anything unreadable is skipped: a missing fact is "not seen", never an error.
The result is the ``writers`` section of the facts (man/ct-tune-json.5);
:mod:`ct_tune.kubeproxy` and :mod:`ct_tune.bootinit` interpret it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from ct_tune import kubeproxy, sysctld
from ct_tune.facts import Roots, in_root

#: At most this many /proc/PID directories are looked at (lowest PIDs first: system
#: daemons start early).
MAX_PIDS = 4096
#: Bytes read of any one file (a cmdline, a config file).
MAX_BYTES = 256 * 1024
#: OpenWrt's kmodloader reads these at boot (package/base-files, /etc/init.d/boot).
MODULES_D = "etc/modules.d"
CONTAINERD_TASKS = "run/containerd/io.containerd.runtime.v2.task/k8s.io"
IMAGE_ANNOTATION = "io.kubernetes.cri.image-name"
K3S_CONFIG = "etc/rancher/k3s/config.yaml"
#: A release in a binary's path: /opt/kubernetes/v1.25.3/bin/kube-proxy.
VERSION_IN_PATH = re.compile(r"(?:^|[/_-])(v\d+\.\d+(?:\.\d+)?)(?:$|[/_-])")


def _at(root: Path, rel: str) -> Path:
    """facts.in_root, where a directory this user may not search (another user's
    /proc/PID/root) counts as missing: the path returned then does not exist."""
    try:
        return in_root(root, rel)
    except OSError:
        return root / "ct-tune: not searchable"


def _read(path: Path | str, limit: int = MAX_BYTES) -> str | None:
    """Text of a file (its first `limit` bytes), or None when it is missing, unreadable,
    not a regular file or not text.  Special files are never opened (a FIFO would block).
    Read through a bare descriptor, not a file object: collect reads the cmdline of every
    process on the host, a quarter of the time."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        chunks, left = [], limit
        while left > 0:
            data = os.read(fd, min(left, 1 << 16))
            if not data:
                break
            chunks.append(data)
            left -= len(data)
        return b"".join(chunks).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except OSError:
        return False


def _pids(roots: Roots) -> tuple[list[int], bool]:
    try:
        names = [int(name) for name in os.listdir(roots.procfs) if name.isdigit()]
    except OSError:
        return [], False
    names.sort()
    return names[:MAX_PIDS], len(names) > MAX_PIDS


def _argv(roots: Roots, pid: int) -> list[str] | None:
    text = _read(f"{roots.procfs}/{pid}/cmdline")  # a string: one per process
    if not text:
        return None
    return [a for a in text.split("\0") if a != ""] or None


def kind_of(argv: list[str]) -> str | None:
    """'kube-proxy' for a kube-proxy process (also hyperkube's), 'k3s' for a k3s server
    or agent (kube-proxy runs inside it), else None."""
    base = os.path.basename(argv[0])
    if base == "kube-proxy":
        return "kube-proxy"
    if base == "hyperkube" and len(argv) > 1 and argv[1] in ("kube-proxy", "proxy"):
        return "kube-proxy"
    words = argv[0].split()  # k3s rewrites its title to "k3s server"/"k3s agent"
    first = os.path.basename(words[0])
    rest = words[1:] + argv[1:]
    if first == "k3s" and rest and rest[0] in ("server", "agent"):
        return "k3s"
    return None


def parse_flags(args: list[str], prefix: str = "--") -> dict[str, str]:
    """--name=value and --name value pairs (a bare --name reads as "true")."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith(prefix):
            name, eq, value = a.partition("=")
            if not eq:
                nxt = args[i + 1] if i + 1 < len(args) else None
                if nxt is not None and not nxt.startswith("-"):
                    value, i = nxt, i + 1
                else:
                    value = "true"
            out[name] = value
        i += 1
    return out


def conntrack_from_flags(flags: dict[str, str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for flag, field in kubeproxy.FLAGS.items():
        if flag in flags:
            out[field] = kubeproxy.parse_field(field, flags[flag])
    return out


def conntrack_section(text: str) -> dict[str, int | None] | None:
    """The ``conntrack:`` block of a KubeProxyConfiguration (YAML as kubeadm writes it, or
    JSON); None when the file has no such block.  Only the scalar fields ct-tune models are
    read, with a line-based reader: no YAML library, and nothing in the file is evaluated."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        block = data.get("conntrack") if isinstance(data, dict) else None
        if not isinstance(block, dict):
            return None
        pairs = {k: str(v) for k, v in block.items() if v is not None}
    else:
        pairs = {}
        lines = text.splitlines()
        start = next((i for i, ln in enumerate(lines)
                      if re.match(r"^(\s*)conntrack:\s*(#.*)?$", ln)), None)
        if start is None:
            return None
        indent = len(lines[start]) - len(lines[start].lstrip())
        for ln in lines[start + 1:]:
            if not ln.strip() or ln.lstrip().startswith("#"):
                continue
            if len(ln) - len(ln.lstrip()) <= indent:
                break
            key, colon, value = ln.strip().partition(":")
            value = value.split(" #", 1)[0].strip()
            if colon and value not in ("", "null", "~"):
                pairs[key.strip()] = value
    out: dict[str, int | None] = {}
    for field in kubeproxy.FIELDS:
        if field in pairs:
            out[field] = kubeproxy.parse_field(field, pairs[field])
    return out


def k3s_proxy_args(text: str) -> tuple[list[str], bool]:
    """kube-proxy-arg entries of a k3s config.yaml, and whether disable-kube-proxy is set."""
    args: list[str] = []
    disabled = False
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        key, _, value = ln.partition(":")
        key, value = key.strip().strip("\"'"), value.strip()
        if key == "disable-kube-proxy":
            disabled = value.lower().strip("\"'") in ("true", "yes", "on")
        if key != "kube-proxy-arg":
            continue
        if value.startswith("["):
            args += [v.strip().strip("\"'") for v in value.strip("[]").split(",") if v.strip()]
        elif value:
            args.append(value.strip("\"'"))
        else:
            for item in lines[i + 1:]:
                if not item.strip().startswith("-"):
                    break
                args.append(item.strip()[1:].strip().strip("\"'"))
    return args, disabled


def _container_id(roots: Roots, pid: int) -> str | None:
    text = _read(roots.proc(f"{pid}/cgroup")) or ""
    ids = re.findall(r"([0-9a-f]{64})", text)
    return ids[-1] if ids else None


def _image(roots: Roots, pid: int) -> tuple[str | None, str | None]:
    """The container image containerd recorded for the process's container."""
    cid = _container_id(roots, pid)
    if not cid:
        return None, None
    rel = f"{CONTAINERD_TASKS}/{cid}/config.json"
    text = _read(_at(roots.config_root, rel), 4 * MAX_BYTES)
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None, None
    ann = data.get("annotations") if isinstance(data, dict) else None
    image = ann.get(IMAGE_ANNOTATION) if isinstance(ann, dict) else None
    return (image, "/" + rel) if isinstance(image, str) else (None, None)


def _config_file(roots: Roots, pid: int, path: str) -> tuple[str | None, str | None]:
    """The file as the process sees it (/proc/PID/root/PATH), else under the config root."""
    for where in (roots.proc(f"{pid}/root"), roots.config_root):
        text = _read(_at(where, path))
        if text is not None:
            return text, str(_at(where, path))
    return None, None


def _kube_proxy(roots: Roots, pid: int, argv: list[str], kind: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {"pid": pid, "source": kind, "argv0": argv[0], "flags": {},
                           "config_file": None, "config_read_from": None, "config": None,
                           "version": None, "version_source": None}
    if kind == "k3s":
        args = [a.split("=", 1)[1] for a in argv if a.startswith("--kube-proxy-arg=")]
        text, where = _config_file(roots, pid, K3S_CONFIG)
        if text is not None:
            more, disabled = k3s_proxy_args(text)
            if disabled:
                return None
            args += more
            out["config_read_from"] = where
        flags = conntrack_from_flags(parse_flags(["--" + a for a in args]))
    else:
        parsed = parse_flags(argv[1:])
        flags = conntrack_from_flags(parsed)
        path = parsed.get("--config")
        if path:
            out["config_file"] = path
            text, where = _config_file(roots, pid, path)
            if text is not None:
                out["config"] = conntrack_section(text) or {}
                out["config_read_from"] = where
        # a release in the binary's path (/opt/kubernetes/v1.25.3/bin/kube-proxy)
        m = VERSION_IN_PATH.search(argv[0])
        if m:
            out["version"], out["version_source"] = m.group(1), f"/proc/{pid}/cmdline"
    out["flags"] = flags
    if out["version"] is None:
        image, where = _image(roots, pid)
        if image and kubeproxy.parse_version(image.rpartition(":")[2]):
            out["version"] = image.rpartition(":")[2]
            out["version_source"] = f"{where} ({image})"
    return out


def _init(roots: Roots, distro: dict[str, Any] | None) -> tuple[str | None, list[str]]:
    comm = (_read(roots.proc("1/comm")) or "").strip()
    root = roots.config_root
    seen = [f"/proc/1/comm={comm}"] if comm else []
    if _exists(_at(root, "run/systemd/system")):
        return "systemd", [*seen, "/run/systemd/system"]
    if comm == "systemd":
        return "systemd", seen
    if comm == "procd" or (distro or {}).get("id") == "openwrt":
        return "procd", seen + ([distro["source"]] if distro else [])
    if _exists(_at(root, "run/openrc")):
        return "openrc", [*seen, "/run/openrc"]
    if comm == "init":
        return "sysvinit", seen
    return None, seen


def _distro(root: Path) -> dict[str, Any] | None:
    text = _read(_at(root, "etc/openwrt_release"))
    if text is not None:
        kv = _kv(text)
        return {"id": "openwrt", "name": kv.get("DISTRIB_ID", "OpenWrt"),
                "version": kv.get("DISTRIB_RELEASE"), "source": "/etc/openwrt_release"}
    for rel in ("etc/os-release", "usr/lib/os-release"):
        text = _read(_at(root, rel))
        if text is not None:
            kv = _kv(text)
            return {"id": kv.get("ID"), "name": kv.get("PRETTY_NAME") or kv.get("NAME"),
                    "version": kv.get("VERSION_ID"), "source": "/" + rel}
    return None


def _kv(text: str) -> dict[str, str]:
    out = {}
    for ln in text.splitlines():
        key, eq, value = ln.partition("=")
        if eq and key.strip() and not key.lstrip().startswith("#"):
            out[key.strip()] = value.strip().strip("\"'")
    return out


def _modules_d(root: Path) -> list[dict[str, str]]:
    """OpenWrt's /etc/modules.d entries that load nf_conntrack (kmodloader, at boot)."""
    out = []
    try:
        names = sorted(p.name for p in _at(root, MODULES_D).iterdir())
    except OSError:
        return []
    for name in names:
        text = _read(_at(root, f"{MODULES_D}/{name}")) or ""
        users = [m for m in sysctld.parse_modules_load(text) if sysctld.loads_conntrack(m)]
        if users:
            out.append({"module": users[0], "file": f"/{MODULES_D}/{name}"})
    return out


def _containers(roots: Roots) -> dict[str, Any]:
    root = roots.config_root
    evidence = []
    for rel in (".dockerenv", "run/.containerenv", "run/containerd", "run/k3s"):
        if _exists(_at(root, rel)):
            evidence.append("/" + rel)
    cgroup = _read(roots.proc("1/cgroup")) or ""
    for word in ("docker", "kubepods", "containerd", "libpod", "lxc"):
        if word in cgroup:
            evidence.append(f"/proc/1/cgroup mentions {word}")
    return {"in_container": any(e in ("/.dockerenv", "/run/.containerenv") or "cgroup" in e
                                for e in evidence),
            "evidence": evidence}


def collect(roots: Roots) -> dict[str, Any]:
    """The ``writers`` facts section."""
    pids, truncated = _pids(roots)
    found = None
    for pid in pids:
        argv = _argv(roots, pid)
        kind = kind_of(argv) if argv else None
        if kind:
            found = _kube_proxy(roots, pid, argv, kind)  # type: ignore[arg-type]
            if found is not None and kind == "kube-proxy":
                break
    distro = _distro(roots.config_root)
    init, init_evidence = _init(roots, distro)
    return {"kube_proxy": found, "init": init, "init_evidence": init_evidence,
            "distro": distro, "containers": _containers(roots),
            "modules_d": _modules_d(roots.config_root),
            "pids_scanned": len(pids), "pids_truncated": truncated}


def capture_files(roots: Roots) -> list[tuple[Path, str, str | None]]:
    """(source, path in the tree, replacement text or None) of every file collect() reads
    that a capture must keep.  Secrets stay out: a k3s config.yaml (which holds the join
    token) is reduced to its kube-proxy lines, and a containerd task spec (environment,
    mounts) to the image name."""
    root = roots.config_root
    out: list[tuple[Path, str, str | None]] = []
    for rel in ("1/comm", "1/cgroup"):
        out.append((roots.proc(rel), f"proc/{rel}", None))
    for rel in (".dockerenv", "run/.containerenv", "etc/openwrt_release", "etc/os-release",
                "usr/lib/os-release"):
        out.append((_at(root, rel), rel, None))
    for rel in ("run/systemd/system", "run/openrc", "run/containerd", "run/k3s"):
        if _exists(_at(root, rel)):
            out.append((_at(root, rel), rel + "/.present", ""))
    try:
        for p in sorted(_at(root, MODULES_D).iterdir()):
            out.append((p, f"{MODULES_D}/{p.name}", None))
    except OSError:
        pass
    facts = collect(roots)
    kp = facts["kube_proxy"]
    if kp:
        pid = kp["pid"]
        argv = _argv(roots, pid) or []
        if kp["source"] == "k3s":
            keep = [a for a in argv[:2] if not a.startswith("--")]
            keep += [a for a in argv if a.startswith("--kube-proxy-arg=")]
            out.append((roots.proc(f"{pid}/cmdline"), f"proc/{pid}/cmdline",
                        "\0".join(keep) + "\0"))
            text, _ = _config_file(roots, pid, K3S_CONFIG)
            if text is not None:
                args, _disabled = k3s_proxy_args(text)
                reduced = "kube-proxy-arg:\n" + "".join(f'  - "{a}"\n' for a in args)
                out.append((Path(K3S_CONFIG), f"proc/{pid}/root/{K3S_CONFIG}", reduced))
        else:
            out.append((roots.proc(f"{pid}/cmdline"), f"proc/{pid}/cmdline", None))
            if kp["config_file"] and kp["config_read_from"]:
                rel = kp["config_file"].lstrip("/")
                out.append((Path(kp["config_read_from"]), f"proc/{pid}/root/{rel}", None))
        cid = _container_id(roots, pid)
        out.append((roots.proc(f"{pid}/cgroup"), f"proc/{pid}/cgroup", None))
        image, where = _image(roots, pid)
        if image and cid:
            spec = json.dumps({"annotations": {IMAGE_ANNOTATION: image}}) + "\n"
            out.append((Path(where or ""), (where or "").lstrip("/"), spec))
    return out
