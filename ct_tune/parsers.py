"""Pure parsers for the procfs/sysfs text formats ct-tune reads.

They take text and return values, raising ValueError with a short reason; the
caller (facts.py) knows the file name and turns that into an InputError.  Kept
free of I/O so captured trees and unit tests exercise exactly the same code as
a live host.
"""

from __future__ import annotations

import math
import re

#: Column names in /proc/net/stat/nf_conntrack mapped to the names conntrack -S
#: and node_exporter use.  Old kernels printed "searched" and "delete_list" in
#: those positions with a different meaning, so they are kept under their own names.
STAT_ALIASES = {"clashres": "clash_resolve", "chainlength": "chaintoolong"}

#: Columns that are not event counters: entries repeats the count on every CPU line.
STAT_NOT_SUMMED = {"entries"}

_ARCH_POINTER = {
    8: ("x86_64", "amd64", "aarch64", "arm64", "ppc64", "ppc64le", "s390x", "riscv64",
        "mips64", "loongarch64", "sparc64", "alpha", "ia64"),
    4: ("i386", "i486", "i586", "i686", "x86", "armv6l", "armv7l", "armv7", "arm", "armhf",
        "armel", "mips", "mipsel", "ppc", "powerpc", "riscv32", "s390", "sparc", "m68k"),
}


#: More digits than any value the kernel prints (a u64 has 20); also well under Python's
#: int conversion limit (4300 digits), whose ValueError would otherwise escape as noise.
MAX_DIGITS = 40


def _int(text: str, base: int = 10) -> int:
    """int(text, base), refusing a number too long to be one the kernel printed."""
    digits = text.strip().lstrip("+-")
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"number too long ({len(digits)} digits)")
    return int(text, base)


#: Digits of a decimal value read from a sysctl file: 20 holds any 64-bit value; longer
#: is corrupt.  Hexadecimal digits of one /proc/net/stat/nf_conntrack counter (an
#: unsigned int printed as %08x; 16 allows 64 bits).
DECIMAL_DIGITS = 20
MAX_HEX_DIGITS = 16
#: what the kernel prints (and proc_get_long reads back): an optional minus, ASCII digits;
#: never a plus sign
_DECIMAL = re.compile(r"-?[0-9]+")
_HEX = re.compile(rf"[0-9a-fA-F]{{1,{MAX_HEX_DIGITS}}}")
_MEMINFO_VALUE = re.compile(r"[0-9]+")


def _clip(value: str, width: int = 40) -> str:
    return value if len(value) <= width else value[:width - 3] + "..."


def decimal(value: str) -> int:
    """An ASCII decimal integer of sane length (not '\u00b2', not '1_000', not 5000 digits)."""
    if not _DECIMAL.fullmatch(value):
        raise ValueError(f"expected an integer, found {_clip(value)!r}")
    if len(value.lstrip("+-")) > DECIMAL_DIGITS:
        raise ValueError(f"number too long ({len(value.lstrip('+-'))} digits)")
    return int(value)


def parse_sysctl_value(text: str) -> int | list[int] | str:
    """A sysctl file's value: an int, a list of ints (multi-field), or the raw string."""
    fields = text.split()
    if not fields:
        return ""
    try:
        ints = [decimal(f) for f in fields]
    except ValueError:  # not numbers, or a number too long to be one: keep the text
        return text.strip()
    return ints[0] if len(ints) == 1 else ints


def parse_int(text: str) -> int:
    """A single integer value, or ValueError naming what was found instead."""
    value = text.strip()
    if not value:
        raise ValueError("empty, expected an integer")
    return decimal(value)


def parse_uptime(text: str) -> int:
    """/proc/uptime ("350735.47 234388.90"): whole seconds since boot."""
    fields = text.split()
    try:
        seconds = float(fields[0])
    except (IndexError, ValueError):
        raise ValueError(f"expected seconds since boot, got {text.strip()[:40]!r}") from None
    if not math.isfinite(seconds) or not 0 <= seconds < 2**63:
        raise ValueError(f"expected seconds since boot, got {fields[0]!r}")
    return int(seconds)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per field (the kB suffix converted)."""
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not _MEMINFO_VALUE.fullmatch(parts[0]):
            raise ValueError(f"line {n}: expected 'Key: value kB', found {line.strip()[:60]!r}")
        scale = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
        out[key.strip()] = _int(parts[0]) * scale
    return out


def parse_cpu_list(text: str) -> list[int]:
    """A kernel CPU list such as '0-3,8,10-11', each CPU once, in order.

    The ranges are merged before they are expanded, so the work and the result stay
    within MAX_CPUS however many (overlapping) ranges a corrupt file repeats.
    """
    value = text.strip()
    if not value:
        return []
    spans: list[tuple[int, int]] = []
    for part in value.split(","):
        m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part.strip())
        if not m:
            raise ValueError(f"expected a CPU list like '0-3,8', found {value[:40]!r}")
        lo = _int(m.group(1))
        hi = _int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise ValueError(f"CPU range {part[:40]!r} runs backwards")
        if hi >= MAX_CPUS:
            raise ValueError(f"CPU {hi} is beyond any kernel's CPU count (under {MAX_CPUS})")
        spans.append((lo, hi))
    cpus: list[int] = []
    for lo, hi in sorted(spans):
        start = max(lo, cpus[-1] + 1) if cpus else lo
        cpus.extend(range(start, hi + 1))
    return cpus


#: A CPU number no kernel reaches (x86's MAXSMP sets CONFIG_NR_CPUS to 8192, the largest
#: in arch/*/Kconfig): one beyond it is corrupt input, and expanding a range up to it
#: (0-99999999999) would exhaust memory.
MAX_CPUS = 1 << 16


def parse_kernel_version(release: str) -> tuple[int, int, int] | None:
    """'6.18.44-fc-v657' -> (6, 18, 44); None when it does not start with a version."""
    m = re.match(r"(\d{1,9})\.(\d{1,9})(?:\.(\d{1,9}))?(?!\d)", release.strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def pointer_size_for_arch(arch: str) -> int | None:
    """Pointer size in bytes for a kernel architecture name (uname -m)."""
    name = arch.strip().lower()
    for size, names in _ARCH_POINTER.items():
        if name in names:
            return size
    if name.startswith(("arm", "i")) and not name.startswith("ia64"):
        return 4
    return None


def parse_slabinfo(text: str, cache: str = "nf_conntrack") -> int | None:
    """Object size (bytes, including alignment) of a slab cache from /proc/slabinfo."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == cache:
            if len(fields) < 4 or not re.fullmatch(r"[0-9]+", fields[3]):
                raise ValueError(f"malformed {cache} line: {line.strip()[:60]!r}")
            return _int(fields[3])
    return None


def parse_conntrack_stat(text: str) -> dict:
    """/proc/net/stat/nf_conntrack: one header line, then one hex line per possible CPU.

    Columns are found by header name, never by position, because the kernel has
    renamed and reused them.  Counters are summed over CPUs except ``entries``,
    which repeats the namespace's count on every line.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty file, expected a header line and one line per CPU")
    header = lines[0].split()
    if not header or any(not re.fullmatch(r"[a-z_]+", h) for h in header):
        raise ValueError(f"expected a header of column names, found {lines[0].strip()[:60]!r}")
    if "drop" not in header or "entries" not in header:
        raise ValueError(f"no drop or entries column in the header {lines[0].strip()[:60]!r}")
    if len(lines) < 2:
        raise ValueError("no CPU lines after the header")
    names = [STAT_ALIASES.get(h, h) for h in header]
    totals = {name: 0 for name in names if name not in STAT_NOT_SUMMED}
    entries = 0
    for n, line in enumerate(lines[1:], 2):
        fields = line.split()
        if len(fields) != len(header):
            raise ValueError(f"line {n}: {len(fields)} fields, header has {len(header)}")
        try:
            if not all(_HEX.fullmatch(f) for f in fields):
                raise ValueError
            values = [int(f, 16) for f in fields]
        except ValueError:
            raise ValueError(f"line {n}: expected hexadecimal counters") from None
        for name, value in zip(names, values, strict=True):
            if name in STAT_NOT_SUMMED:
                entries = max(entries, value)
            else:
                totals[name] += value
    return {
        "columns": header,
        "cpus": len(lines) - 1,
        "entries": entries,
        "counters": totals,
    }


def parse_conntrack_cli_stat(text: str) -> dict:
    """``conntrack -S`` output, in parse_conntrack_stat's shape, in each form it has had.

    * conntrack-tools 1.4 and later ask ctnetlink (nfct_stats_cb in src/conntrack.c):
      one ``cpu=N<TAB>key=value ...`` line per CPU, ctnetlink's names
      (``clash_resolve``, ``chaintoolong``).
    * earlier 1.x releases read /proc/net/stat/nf_conntrack (display_proc_conntrack_stats):
      the same ``cpu=N`` lines with the procfs header's names, ``entries=`` (the count,
      repeated per CPU, not summed) and ``clashres``/``chainlength`` included.
    * the first releases printed one ``name<TAB><TAB>value`` line per column of the first
      CPU's line only (``insert_failed\\t\\t0``): its counters are CPU 0's, not totals, and
      the result says so (``first_cpu_only``).

    Anything else is a ValueError naming the line: never an empty table without a word.
    """
    totals: dict[str, int] = {}
    columns: list[str] = []
    per_line: dict[str, int] = {}
    entries = cpus = 0
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or line.startswith("conntrack v"):  # no fields; a version banner
            continue
        if fields[0].startswith("cpu=") and fields[0][4:].isdigit():
            cpus += 1
            for field in fields[1:]:
                key, eq, value = field.partition("=")
                if not eq or not re.fullmatch(r"[a-z_0-9]+", key) or not value.isdigit():
                    raise ValueError(f"line {n}: expected key=value counters, found "
                                     f"{field[:30]!r}")
                if key not in columns:
                    columns.append(key)
                name = STAT_ALIASES.get(key, key)
                if name in STAT_NOT_SUMMED:
                    entries = max(entries, _int(value))
                else:
                    totals[name] = totals.get(name, 0) + _int(value)
        elif (len(fields) == 2 and re.fullmatch(r"[a-z_]+", fields[0])
              and fields[1].isdigit()):
            per_line[fields[0]] = _int(fields[1])
            columns.append(fields[0])
        else:
            raise ValueError(f"line {n}: expected 'cpu=N key=value ...' or 'name value', "
                             f"found {line.strip()[:60]!r}")
    if cpus and per_line:
        raise ValueError("mixes per-CPU lines with one-counter-per-line output")
    if per_line:
        entries = per_line.pop("entries", 0)
        totals = {STAT_ALIASES.get(k, k): v for k, v in per_line.items()}
        cpus = 1
    elif not cpus:
        raise ValueError("no counters (expected 'cpu=N key=value ...' lines)")
    return {"columns": columns, "cpus": cpus, "entries": entries, "counters": totals,
            "first_cpu_only": bool(per_line)}
