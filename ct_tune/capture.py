"""Copy the procfs/sysfs files ct-tune reads into a directory tree.

The tree replays this host anywhere with ``--procfs DIR/proc --sysfs DIR/sys``:
for bug reports, for a fleet's odd hosts, and for ct-tune's own test fixtures.
Values are copied as read (procfs files cannot be copied with shutil: their
size reads as 0), file modes are kept because they carry writability, and a
``MODES`` manifest repeats them for trees that travel through git, which keeps
only the executable bit.  /proc/slabinfo is reduced to its nf_conntrack lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from ct_tune.facts import KEEPALIVE_KEYS, NETFILTER_DIR, Roots

PROC_FILES = ["meminfo", "stat", "sys/kernel/arch", "sys/kernel/osrelease",
              "sys/kernel/hostname", "net/stat/nf_conntrack", "sys/net/nf_conntrack_max",
              *(f"sys/net/ipv4/{k}" for k in KEEPALIVE_KEYS)]
SYS_FILES = ["devices/system/cpu/online", "module/nf_conntrack/parameters/hashsize",
             "kernel/slab/nf_conntrack/slab_size", "kernel/slab/nf_conntrack/object_size"]


def _copy(src: Path, dst: Path, keep: list[str], rel: str, filter_lines: str | None = None
          ) -> None:
    try:
        data = src.read_bytes()
        mode = src.stat().st_mode & 0o777
    except OSError:
        return
    if filter_lines is not None:
        lines = data.decode(errors="replace").splitlines(keepends=True)
        data = "".join(ln for ln in lines[:2] if ln.startswith(("slabinfo", "#"))
                       ).encode() + "".join(ln for ln in lines if ln.startswith(filter_lines)
                                            ).encode()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    os.chmod(dst, mode)
    keep.append(f"{rel} {mode:04o}")


def capture(roots: Roots, out: Path) -> int:
    """Write the tree under out/proc and out/sys; returns the number of files copied."""
    modes: list[str] = []
    for rel in PROC_FILES:
        _copy(roots.proc(rel), out / "proc" / rel, modes, f"proc/{rel}")
    _copy(roots.proc("slabinfo"), out / "proc/slabinfo", modes, "proc/slabinfo",
          filter_lines="nf_conntrack ")
    base = roots.proc(NETFILTER_DIR)
    for dirpath, _dirs, files in os.walk(base):
        for name in sorted(files):
            rel = (Path(dirpath) / name).relative_to(roots.procfs)
            _copy(Path(dirpath) / name, out / "proc" / rel, modes, f"proc/{rel}")
    for rel in SYS_FILES:
        _copy(roots.sys(rel), out / "sys" / rel, modes, f"sys/{rel}")
    (out / "MODES").write_text("".join(f"{m}\n" for m in sorted(modes)))
    return len(modes)


def apply_modes(tree: Path) -> None:
    """Restore the file modes recorded in tree/MODES (after a git checkout)."""
    manifest = tree / "MODES"
    if not manifest.exists():
        return
    for line in manifest.read_text().splitlines():
        rel, _, mode = line.rpartition(" ")
        target = tree / rel
        if rel and target.exists():
            os.chmod(target, int(mode, 8))
