"""Copy the procfs/sysfs files ct-tune reads into a directory tree.

The tree replays this host anywhere with ``--procfs DIR/proc --sysfs DIR/sys``:
for bug reports, for a fleet's odd hosts, and for ct-tune's own test fixtures.
Values are copied as read (procfs files cannot be copied with shutil: their
size reads as 0), file modes are kept because they carry writability, and a
``MODES`` manifest repeats them for trees that travel through git, which keeps
only the executable bit.  /proc/slabinfo is reduced to its nf_conntrack lines.

The boot configuration the audit reads (sysctl.d, /etc/sysctl.conf, modules-load.d,
/etc/modules, modprobe.d, udev rules that mention nf_conntrack) is copied beside them,
at its own path (DIR/etc/sysctl.d/..., DIR/usr/lib/sysctl.d/...), where ``--procfs
DIR/proc`` finds it.  A symlink stays a symlink (relative, so the tree can move), and
the file it points to is copied at its own path too: the link's name decides the
reading order (99-sysctl.conf -> ../sysctl.conf), the target is what the admin edits,
and a link to /dev/null masks a file of the same name.

The tree holds everything ``audit`` reads, so a replay gives the findings the live
host gave (a test traces the files a live audit opens and checks each has its copy):

* the table dump /proc/net/nf_conntrack, whole, streamed in blocks (memory stays
  constant): the replay samples the same entries, and ``--sample-limit N`` reads the
  same first N.  It costs about 150-300 bytes per entry on disk (a million-entry table
  is some 250 MB); ``--no-table`` leaves it out, and the replay then has no sample,
  as ``audit --no-sample`` would.
* what was decided from files a tree cannot carry: nf_conntrack built in (live: the
  /sys/module directory without initstate) is written as BUILTIN_MARKER; a sysctl
  on a read-only mount (an unprivileged container's /proc) loses its write bits.

Where the live audit falls back to ``conntrack -L`` (a kernel without
CONFIG_NF_CONNTRACK_PROCFS, or ``--table-source conntrack``), the capture writes its
output as the table dump: the table parser reads both formats.  Not recorded: the
counters such a kernel gives only through ``conntrack -S``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ct_tune import safeio, sockets, sysctld, writers
from ct_tune.errors import CtTuneError, InputError
from ct_tune.facts import (
    BUILTIN_MARKER,
    FORWARDING_FILES,
    KEEPALIVE_KEYS,
    MACHINE_FILE,
    NETFILTER_DIR,
    OLD_NAMES_DIR,
    OLD_PREFIX,
    Roots,
    builtin_module,
    in_root,
)
from ct_tune.facts import machine as facts_machine

#: procfs tables among PROC_FILES: more than one value (see safeio.PROC_TABLE)
PROC_TABLES = {"meminfo", "net/stat/nf_conntrack", "slabinfo"}
PROC_FILES = ["meminfo", "uptime", "sys/kernel/arch", "sys/kernel/osrelease",
              "sys/kernel/hostname", "net/stat/nf_conntrack", "sys/net/nf_conntrack_max",
              *(f"sys/net/ipv4/{k}" for k in KEEPALIVE_KEYS), *FORWARDING_FILES]
SYS_FILES = ["devices/system/cpu/online", "module/nf_conntrack/parameters/hashsize",
             "kernel/slab/nf_conntrack/slab_size", "kernel/slab/nf_conntrack/object_size",
             # present only for a loadable module: tells built-in from modular
             "module/nf_conntrack/initstate"]
#: this namespace's TCP sockets (sockets.FILES), reduced to the states the audit counts
SOCKET_FILES = sockets.FILES
#: the conntrack table the audit samples (ctsource.table_blocks)
TABLE = "net/nf_conntrack"
COPY_BLOCK = 1 << 20


def _copy(src: Path, dst: Path, keep: list[str], rel: str, filter_lines: str | None = None,
          bound: safeio.Bound = safeio.VALUE) -> None:
    """Copy one file as read; one that is missing or unreadable is left out (the facts
    treat it as absent too), one that is not a regular file or too large is an error."""
    fd = safeio.open_regular(src, missing_ok=True, denied_ok=True)
    if fd is None:
        return
    try:
        mode = os.fstat(fd).st_mode & 0o777
        if rel.startswith("proc/sys/") and os.fstatvfs(fd).f_flag & os.ST_RDONLY:
            mode &= ~0o222  # what facts._writable sees on a read-only mount
        data = safeio.read_fd(fd, src, bound)
    finally:
        os.close(fd)
    if filter_lines is not None:
        lines = data.decode(errors="replace").splitlines(keepends=True)
        data = "".join(ln for ln in lines[:2] if ln.startswith(("slabinfo", "#"))
                       ).encode() + "".join(ln for ln in lines if ln.startswith(filter_lines)
                                            ).encode()
    _write(dst, data, mode)
    keep.append(f"{rel} {mode:04o}")


def _copy_stream(src: Path, dst: Path, keep: list[str], rel: str) -> None:
    """Copy a file of any size in blocks (the table dump: procfs reports size 0).
    Absent or unreadable: skipped, as a live audit would find it.  A failure half way
    (the disk fills) removes the partial copy: a truncated dump would replay as a
    smaller table."""
    fd = safeio.open_regular(src, missing_ok=True, denied_ok=True)
    if fd is None:
        return
    f = os.fdopen(fd, "rb", buffering=0)
    mode = os.fstat(fd).st_mode & 0o777
    with f:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            out = open(dst, "wb")  # noqa: SIM115
        except OSError as e:
            raise CtTuneError(f"{dst}: cannot write: {e.strerror or e}") from None
        with out:
            try:
                while True:
                    try:
                        block = f.read(COPY_BLOCK)
                    except OSError as e:
                        raise CtTuneError(f"{src}: cannot read: {e.strerror or e}") from None
                    if not block:
                        break
                    try:
                        out.write(block)
                    except OSError as e:
                        raise CtTuneError(f"{dst}: cannot write: {e.strerror or e}") from None
            except CtTuneError:
                out.close()
                dst.unlink(missing_ok=True)
                raise
    os.chmod(dst, mode)
    keep.append(f"{rel} {mode:04o}")


def _capture_table(roots: Roots, out: Path, modes: list[str], source: str) -> None:
    """The table the audit samples with the same --table-source: the procfs dump, or on
    this host, when it has none (or source is "conntrack"), `conntrack -L`, whose lines
    the table parser reads as well, written where the replay samples."""
    import shutil

    path = roots.proc(TABLE)
    dst, rel = out / "proc" / TABLE, f"proc/{TABLE}"
    if source == "procfs" or not roots.live or (source == "auto" and path.exists()):
        _copy_stream(path, dst, modes, rel)
        return
    if source == "auto" and shutil.which("conntrack") is None:
        return  # the live audit has no table either (it says why)
    from ct_tune import ctsource

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with ctsource.table_blocks(roots, "conntrack") as (_, blocks), open(dst, "w") as f:
            for block in blocks:
                f.write(block)
    except OSError as e:
        dst.unlink(missing_ok=True)
        raise CtTuneError(f"{dst}: cannot write: {e.strerror or e}") from None
    except CtTuneError:
        dst.unlink(missing_ok=True)
        raise
    os.chmod(dst, 0o440)
    modes.append(f"{rel} 0440")


def _copy_sockets(src: Path, dst: Path, keep: list[str], rel: str) -> None:
    """A socket table reduced to its header and the sockets the audit counts
    (sockets.kept_lines), streamed: on a busy host the whole file is a hundred MB of
    ESTABLISHED sockets nothing reads.  Absent (no IPv6) or denied: left out."""
    data = b"".join(sockets.kept_lines(src))
    if not data:
        return
    _write(dst, data, 0o444)
    keep.append(f"{rel} 0444")


def _write(dst: Path, data: bytes, mode: int) -> None:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        os.chmod(dst, mode)
    except OSError as e:
        raise InputError(str(dst), f"cannot write: {e.strerror or e}") from None


def _prepare(out: Path) -> None:
    """DIRECTORY itself is created, its parents are not: a mistyped path is an error,
    not a tree of new directories made by root."""
    try:
        out.mkdir(exist_ok=True)
    except FileNotFoundError:
        raise InputError(str(out), "cannot create the directory: its parent does not exist"
                         ) from None
    except FileExistsError:
        raise InputError(str(out), "not a directory") from None
    except OSError as e:
        raise InputError(str(out), f"cannot create the directory: {e.strerror or e}"
                         ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(str(out), "cannot write into the directory: permission denied or "
                         "read-only")


def capture(roots: Roots, out: Path, table: bool = True, table_source: str = "auto") -> int:
    """Write the tree under out/proc and out/sys; returns the number of files copied.
    table: copy the conntrack table too, read as the audit's --table-source reads it
    (see the module docstring)."""
    _prepare(out)
    modes: list[str] = []
    if table:
        _capture_table(roots, out, modes, table_source)
    for rel in PROC_FILES:
        _copy(roots.proc(rel), out / "proc" / rel, modes, f"proc/{rel}",
              bound=safeio.PROC_TABLE if rel in PROC_TABLES else safeio.VALUE)
    _copy(roots.proc("slabinfo"), out / "proc/slabinfo", modes, "proc/slabinfo",
          filter_lines="nf_conntrack ", bound=safeio.PROC_TABLE)
    for rel in SOCKET_FILES:
        _copy_sockets(roots.proc(rel), out / "proc" / rel, modes, f"proc/{rel}")
    base = roots.proc(NETFILTER_DIR)
    for dirpath, _dirs, files in os.walk(base):
        for name in sorted(files):
            rel = (Path(dirpath) / name).relative_to(roots.procfs)
            _copy(Path(dirpath) / name, out / "proc" / rel, modes, f"proc/{rel}")
    old = roots.proc(OLD_NAMES_DIR)  # the ip_conntrack module's and compatibility names
    if old.is_dir():
        for p in sorted(old.iterdir()):
            if p.name.startswith(OLD_PREFIX):
                rel = p.relative_to(roots.procfs)
                _copy(p, out / "proc" / rel, modes, f"proc/{rel}")
    for rel in SYS_FILES:
        _copy(roots.sys(rel), out / "sys" / rel, modes, f"sys/{rel}")
    _capture_machine(roots, out)
    loaded = roots.proc(f"{NETFILTER_DIR}/nf_conntrack_max").exists()
    if builtin_module(roots, loaded):
        marker = out / "sys" / BUILTIN_MARKER
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("1\n")
        modes.append(f"sys/{BUILTIN_MARKER} 0644")
    links = _capture_config(roots.config_root, out, modes)
    _capture_writers(roots, out, modes)
    _write(out / "MODES", "".join(f"{m}\n" for m in sorted(modes)).encode(), 0o644)
    return len(modes) + links


def _capture_machine(roots: Roots, out: Path) -> None:
    """Before 6.1 there is no /proc/sys/kernel/arch and audit asks uname(2) on the live
    host: keep that answer beside the tree (facts.MACHINE_FILE) so a replay knows the
    same architecture instead of guessing it from the release string."""
    if roots.proc("sys/kernel/arch").exists():
        return
    machine = facts_machine(roots)
    if machine:
        (out / MACHINE_FILE).write_text(f"{machine}\n")


def _capture_writers(roots: Roots, out: Path, modes: list[str]) -> None:
    """The evidence of other writers and of the boot system (ct_tune.writers), reduced
    where it could hold secrets."""
    for src, rel, text in writers.capture_files(roots):
        if text is None:
            _copy(src, out / rel, modes, rel)
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text)
        os.chmod(dst, 0o644)
        modes.append(f"{rel} 0644")


#: (directories, file suffix, only files that mention this) the facts read, see
#: facts._persistence.
CONFIG_DIRS = ((sysctld.SYSCTL_DIRS, ".conf", None),
               (sysctld.MODULES_LOAD_DIRS, ".conf", None),
               (sysctld.MODPROBE_DIRS, ".conf", None),
               (sysctld.UDEV_DIRS, ".rules", "nf_conntrack"))
CONFIG_FILES = (sysctld.SYSCTL_CONF, sysctld.ETC_MODULES)


def config_files(root: Path) -> list[str]:
    """The boot configuration files under root that ct-tune reads, relative to root.  A
    directory that is a link to one already listed (/lib -> usr/lib) is skipped."""
    rels: list[str] = []
    dirs_seen: set[Path] = set()
    for dirs, suffix, mention in CONFIG_DIRS:
        for d in dirs:
            real = in_root(root, d)
            if real in dirs_seen or not real.is_dir():
                continue
            dirs_seen.add(real)
            try:
                names = sorted(p.name for p in real.iterdir() if p.name.endswith(suffix))
            except OSError:
                continue
            for name in names:
                if mention is not None:
                    real_file = in_root(root, f"{d}/{name}")
                    data = (b"" if real_file == root / "dev/null" else safeio.read_bytes(
                        real_file, safeio.CONFIG, missing_ok=True, denied_ok=True))
                    if data is None or mention.encode() not in data:
                        continue
                rels.append(f"{d}/{name}")
    rels += [rel for rel in CONFIG_FILES if (root / rel).exists() or (root / rel).is_symlink()]
    return rels


def _capture_config(root: Path, out: Path, modes: list[str]) -> int:
    """Copy config_files(root) to out/REL; returns the number of symlinks made (copied
    files are counted in modes)."""
    rels = config_files(root)
    is_link = {rel: (root / rel).is_symlink() for rel in rels}
    # where each copied regular file really is, so a link to it can stay a link
    copied = {in_root(root, rel): rel for rel in rels if not is_link[rel]}
    made = 0
    for rel in rels:
        dst = out / rel
        real = in_root(root, rel)
        if not is_link[rel]:
            _copy(real, dst, modes, rel, bound=safeio.CONFIG)
            continue
        if real == root / "dev/null":
            target = "/dev/null"
        elif real in copied:
            target = os.path.relpath(out / copied[real], dst.parent)
        elif real.is_file() and real.relative_to(root).parts[0] not in ("proc", "sys"):
            # the file the link names is part of the configuration: copy it where it is
            copied[real] = real.relative_to(root).as_posix()
            _copy(real, out / copied[real], modes, copied[real], bound=safeio.CONFIG)
            target = os.path.relpath(out / copied[real], dst.parent)
        else:
            _copy(real, dst, modes, rel, bound=safeio.CONFIG)
            continue
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            os.symlink(target, dst)
        except OSError as e:
            raise InputError(str(dst), f"cannot write: {e.strerror or e}") from None
        made += 1
    return made


def apply_modes(tree: Path) -> None:
    """Restore the file modes recorded in tree/MODES (after a git checkout)."""
    manifest = tree / "MODES"
    if not manifest.exists():
        return
    text = safeio.read_text(manifest, safeio.CONFIG) or ""
    for line in text.splitlines():
        rel, _, mode = line.rpartition(" ")
        target = tree / rel
        if rel and target.exists():
            os.chmod(target, int(mode, 8))
