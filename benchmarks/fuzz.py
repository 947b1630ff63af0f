#!/usr/bin/env python3
"""Hostile-input harness: the real CLI over generated procfs trees, facts snapshots, rule,
profile and rollback-state files, and scratch roots with symlinks planted in them.

Every example starts from a known-good input (the captured host tests/hosts/defaults-16g,
a `collect` of it, a shipped rule or profile, the state a real `apply --root SCRATCH
--no-live` saved) and breaks it the way a corrupt host, a careless admin or an attacker
would: random bytes, empty and missing files, FIFOs, negative, huge and non-numeric
values, nan/inf, deep nesting, wrong types, newlines carrying a sysctl line, paths that
climb out of the root, symlinks to elsewhere.  Each command runs ct_tune.cli.main in a
forked child (so a hang in C code, a memory blow-up (RLIMIT_AS) or a crash costs one
example, not the run) under a timeout:

    audit; audit --format sysctl; apply --dry-run --root SCRATCH --no-live;
    apply --root SCRATCH --no-live (real files, in the scratch root only);
    rollback --dry-run --root SCRATCH (state files); rollback --root SCRATCH (planted roots)

and it counts, per category, the examples where:

    internal    'internal error' or a traceback on stderr, an exception out of main,
                a crash, or an exit status ct-tune does not document
    hang        a command still running after --timeout seconds
    outside     anything changed outside the scratch root: a sentinel tree, the input
                files themselves, the host's /etc/sysctl.d, modprobe.d, modules-load.d,
                /etc/sysctl.conf, /var/lib/ct-tune, /proc/sys/net/netfilter
    injected    a non-comment, non-blank line of a rendered sysctl fragment (audit --format
                sysctl, apply's diff, the file apply wrote) that is not
                `net.netfilter.nf_conntrack_* = integer` / `net.nf_conntrack_max = integer`,
                or any other line in modprobe.d / modules-load.d than ct-tune's own
    false_green exit 0 from `audit` (or `rollback --dry-run`) with an input the
                generator broke in a way that must be reported (a non-numeric, negative
                or out-of-range kernel value, a snapshot field of the wrong type, a file
                that does not parse, a state naming paths outside the root)
    memory      a command whose peak RSS passed MEMORY_FLAG_MIB (the "table" category
                feeds conntrack dumps of tens of thousands of made-up protocols, states,
                zones and addresses: every aggregate of a sample must stay bounded)

A harness, not a test: it prints the table and exits 0 whatever it finds
(tests/test_props_cli.py runs it with few examples and asserts the zeros).

    sudo .venv/bin/python benchmarks/fuzz.py --examples 200 [--seed 1] [--timeout 20]
        [--category procfs,facts,rules,profiles,state,roots,table] [--json] [--show 3]
    .venv/bin/python benchmarks/fuzz.py --category facts --replay 17   # one example
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import stat
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
HOST = REPO / "tests" / "hosts" / "defaults-16g"
RULES = REPO / "rules"
CATEGORIES = ("procfs", "facts", "rules", "profiles", "state", "roots", "table")
CHECKS = ("internal", "hang", "outside", "injected", "false_green", "memory")
#: peak RSS of one command above which it is counted under "memory": every aggregate of a
#: table sample is bounded, so no input may make a command grow with it
MEMORY_FLAG_MIB = 256
MEMORY_LIMIT = 2 << 30  # per command: a 10 GB string is a MemoryError, not the OOM killer
DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 5, 130}

# the kernel values the rules do arithmetic on: corrupting one must never read as OK
INTEGER_NAMES = {"nf_conntrack_max", "nf_conntrack_count", "nf_conntrack_buckets",
                 "nf_conntrack_expect_max", "nf_conntrack_acct", "nf_conntrack_timestamp",
                 "nf_conntrack_tcp_loose", "nf_conntrack_tcp_be_liberal",
                 "tcp_keepalive_time", "tcp_keepalive_intvl", "tcp_keepalive_probes"}
INTEGER_PREFIXES = ("nf_conntrack_tcp_timeout_", "nf_conntrack_udp_timeout",
                    "nf_conntrack_icmp", "nf_conntrack_generic_timeout")
INJECTION = "kernel.core_pattern = |/tmp/ct-tune-fuzz-pwned"
SYSCTL_LINE = re.compile(r"(net\.netfilter\.nf_conntrack_[a-z0-9_]+|net\.nf_conntrack_max)"
                         r"\s*=\s*-?[0-9]+")
OTHER_LINES = {"modprobe.d": re.compile(r"options nf_conntrack hashsize=[0-9]+"),
               "modules-load.d": re.compile(r"nf_conntrack")}
FRAGMENTS = ("etc/sysctl.d/99-ct-tune.conf", "etc/modprobe.d/ct-tune.conf",
             "etc/modules-load.d/ct-tune.conf")
HOST_PATHS = [Path(p) for p in ("/etc/sysctl.d", "/etc/modprobe.d", "/etc/modules-load.d",
                                "/etc/sysctl.conf", "/var/lib/ct-tune", "/run/sysctl.d",
                                "/proc/sys/net/netfilter", "/proc/sys/net/nf_conntrack_max",
                                "/proc/sys/kernel/core_pattern")]


def integer_file(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name in INTEGER_NAMES or name.startswith(INTEGER_PREFIXES)


# ------------------------------------------------------------------ running the CLI


@dataclass
class Run:
    args: list[str]
    code: int | None = None
    stdout: str = ""
    stderr: str = ""
    escaped: str | None = None  # an exception that got out of main()
    hang: bool = False
    crashed: str | None = None  # killed by a signal, or died without a report
    peak_rss_mib: int = 0


def _child(args: list[str], w: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    out, err = io.StringIO(), io.StringIO()
    sys.stdout, sys.stderr = out, err
    sys.argv = ["ct-tune", *args]
    code, escaped = None, None
    try:
        from ct_tune import cli

        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # what the user would see as a traceback
        escaped = f"{type(e).__name__}: {str(e)[:300]}"
    report = {"code": code, "stdout": out.getvalue()[:4 << 20],
              "stderr": err.getvalue()[:1 << 16], "escaped": escaped,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    with os.fdopen(w, "wb") as f:
        f.write(json.dumps(report).encode())


def run_cli(args: list[str], timeout: float) -> Run:
    """ct-tune ARGS in a forked child: its exit status and output, or how it failed."""
    run = Run(args)
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            _child(args, w)
        finally:
            os._exit(0)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    with os.fdopen(r, "rb") as f:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                run.hang = True
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([f], [], [], left)
            if ready:
                chunk = os.read(f.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if run.hang:
        return run
    try:
        report = json.loads(b"".join(chunks))
    except ValueError:
        run.crashed = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                       else "no report")
        return run
    run.code, run.stdout, run.stderr = report["code"], report["stdout"], report["stderr"]
    run.escaped = report["escaped"]
    run.peak_rss_mib = report["peak_rss_mib"]
    return run


def internal(run: Run) -> str | None:
    if run.hang:
        return None
    if run.crashed:
        return f"crashed ({run.crashed})"
    if run.escaped:
        return f"escaped main(): {run.escaped}"
    for line in run.stderr.splitlines():
        if "internal error" in line or line.startswith("Traceback"):
            return line[:300]
    if run.code not in DOCUMENTED_EXITS:
        return f"exit status {run.code}"
    return None


def injected_lines(text: str, kind: str = "sysctl.d") -> list[str]:
    """Setting lines of a rendered fragment that are not ct-tune's own."""
    pattern = OTHER_LINES.get(kind, SYSCTL_LINE)
    return [line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", ";"))
            and not pattern.fullmatch(line.strip())]


def diff_injected(text: str) -> list[str]:
    """Added lines of apply's diffs that are settings and not ct-tune's (any of its files)."""
    bad = []
    for line in text.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            body = line[1:].strip()
            if (body and not body.startswith(("#", ";"))
                    and not any(p.fullmatch(body) for p in (SYSCTL_LINE, *OTHER_LINES.values()))):
                bad.append(body)
    return bad


# ------------------------------------------------------------------ watching for writes


def _fingerprint(path: Path, out: dict[str, str], limit: int = 5000) -> None:
    try:
        st = os.lstat(path)
    except OSError:
        out[str(path)] = "absent"
        return
    if stat.S_ISLNK(st.st_mode):
        out[str(path)] = "link:" + os.readlink(path)
    elif stat.S_ISDIR(st.st_mode):
        out[str(path)] = f"dir:{st.st_mode:o}"
        try:
            names = sorted(os.listdir(path))
        except OSError:
            return
        for name in names[:limit]:
            _fingerprint(path / name, out, limit)
    elif stat.S_ISREG(st.st_mode):
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha1(f.read(1 << 20)).hexdigest()
        except OSError:
            digest = "unreadable"
        out[str(path)] = f"file:{st.st_mode:o}:{st.st_size}:{digest}"
    else:
        out[str(path)] = f"special:{st.st_mode:o}"


def fingerprint(paths: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in paths:
        _fingerprint(p, out)
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# ------------------------------------------------------------------ generators


def hostile_number(rng: random.Random) -> str:
    return rng.choice(["-1", "-5", "-9223372036854775809", "18446744073709551616",
                       "9" * rng.choice([20, 40, 400, 5000]), "0x10", "1e400", "nan",
                       "inf", "4294967296", "2147483648", " 12 34", "1.5", "+7", "٣"])


def garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return os.urandom(rng.randrange(1, 300)) if rng.random() < 0.5 else bytes(
            rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    if kind == 1:
        return "".join(rng.choice("abc xyz=\t\n:;#{}[]\"'\\0123456789")
                       for _ in range(rng.randrange(1, 200))).encode() + b"x"
    if kind == 2:
        return b"x" * rng.choice([1, 10_000, 900_000])
    if kind == 3:
        return b"\n".join([b"12"] * rng.randrange(2, 2000)) + b"?"
    return b"\x00" * rng.randrange(1, 5000)


@dataclass
class Example:
    category: str
    index: int
    what: list[str] = field(default_factory=list)
    corrupt: bool = False  # the audit must not say OK
    commands: list[tuple[str, list[str]]] = field(default_factory=list)
    watch: list[Path] = field(default_factory=list)  # must not change
    scratch: Path = Path("/nonexistent")


class Fuzzer:
    def __init__(self, work: Path, seed: int, timeout: float) -> None:
        from ct_tune.capture import apply_modes

        self.work, self.seed, self.timeout = work, seed, timeout
        self.base = work / "base"
        shutil.copytree(HOST, self.base)
        apply_modes(self.base)
        self.files = sorted(p.relative_to(self.base).as_posix()
                            for p in self.base.rglob("*") if p.is_file() and p.name != "MODES")
        self.sentinel = work / "sentinel"
        self.reset_sentinel()
        self.rule_files = sorted(RULES.glob("*.toml"))
        self.profile_files = sorted((RULES / "profiles").glob("*.toml"))
        base_run = run_cli(["collect", *self.tree_args(self.base)], 120)
        assert base_run.code == 0, base_run.stderr
        self.facts = json.loads(base_run.stdout)
        scratch = work / "state-base"
        apply_run = run_cli(["apply", "--root", str(scratch), "--no-live",
                             *self.tree_args(self.base)], 120)
        assert apply_run.code == 0, apply_run.stderr
        self.state = json.loads((scratch / "var/lib/ct-tune/rollback.json").read_text())

    def reset_sentinel(self) -> None:
        """The tree outside every scratch root: anything written here escaped a root."""
        shutil.rmtree(self.sentinel, ignore_errors=True)
        for rel, text in [("etc/sysctl.d/10-keep.conf", "net.netfilter.nf_conntrack_max = 7\n"),
                          ("etc/sysctl.conf", "# admin's\n"), ("var/lib/ct-tune/keep", "x"),
                          ("outside.txt", "outside\n")]:
            (self.sentinel / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.sentinel / rel).write_text(text)

    @staticmethod
    def tree_args(tree: Path) -> list[str]:
        return ["--procfs", str(tree / "proc"), "--sysfs", str(tree / "sys")]

    def example(self, category: str, index: int) -> Example:
        rng = random.Random(f"{self.seed}:{category}:{index}")
        ex = Example(category, index)
        d = self.work / f"{category}-{index}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        self.reset_sentinel()
        ex.scratch = d / "scratch"
        getattr(self, f"_{category}")(rng, ex, d)
        ex.watch += [self.sentinel, *HOST_PATHS]
        return ex

    # (a) procfs/sysfs trees
    def _tree(self, d: Path) -> Path:
        tree = d / "tree"
        shutil.copytree(self.base, tree, symlinks=True)
        return tree

    def _procfs(self, rng: random.Random, ex: Example, d: Path) -> None:
        tree = self._tree(d)
        for _ in range(rng.choice([1, 1, 2, 3])):
            rel = rng.choice([*self.files, "proc/sys/kernel/hostname", "etc/sysctl.d/50-x.conf",
                              "proc/net/nf_conntrack"])
            path = tree / rel
            checked = integer_file(rel) or rel in ("proc/meminfo", "proc/net/stat/nf_conntrack")
            kind = rng.choice(["garbage", "number", "empty", "missing", "fifo", "dir",
                               "devzero", "hostname", "negative", "huge", "huge", "lines"])
            if kind == "hostname":  # it replaces the hostname file, never the file drawn
                rel, checked = "proc/sys/kernel/hostname", False
                path = tree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            broken = True
            if kind == "garbage":
                path.write_bytes(garbage(rng))
            elif kind == "number":
                path.write_text(f"{rng.randrange(0, 1 << 20)}\n")
                broken = False
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "missing":
                broken = rel == "proc/meminfo"
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "dir":
                path.mkdir()
            elif kind == "devzero":
                path.symlink_to("/dev/zero")
            elif kind == "hostname":
                path = tree / "proc/sys/kernel/hostname"
                if path.exists():
                    path.unlink()
                path.write_text(f"vm\n{INJECTION}\n")
                rel, broken = "proc/sys/kernel/hostname (newline + sysctl line)", False
            elif kind == "negative":
                path.write_text(f"-{rng.randrange(1, 1 << 40)}\n")
            elif kind == "huge":
                path.write_text(hostile_number(rng) + "\n")
                broken = not re.fullmatch(r"[0-9]{1,9}", path.read_text().strip())
            else:  # many or long lines
                path.write_text(f"{'1 ' * rng.choice([10, 100_000])}\n" * rng.choice([1, 3000]))
            ex.corrupt |= broken and checked
            ex.what.append(f"{rel}: {kind}")
        ex.watch.append(tree)
        self._tree_commands(ex, tree)

    def _tree_commands(self, ex: Example, tree: Path, extra: list[str] = (),
                       real: bool = True) -> None:
        args = [*self.tree_args(tree), "--root", str(tree), *extra]
        ex.commands += [("audit", ["audit", *args]),
                        ("audit-sysctl", ["audit", "--format", "sysctl", *args])]
        apply_args = [*self.tree_args(tree), *extra, "--root", str(ex.scratch), "--no-live"]
        ex.commands.append(("apply-dry-run", ["apply", "--dry-run", *apply_args]))
        if real:
            ex.commands.append(("apply", ["apply", *apply_args, "--lock-wait", "0"]))

    # (g) conntrack table dumps: odd but readable lines in the tens of thousands
    def _table(self, rng: random.Random, ex: Example, d: Path) -> None:
        tree = self._tree(d)
        n = rng.choice([20_000, 40_000])
        odd = rng.sample(["protocols", "states", "zones", "addresses", "ports"],
                         rng.randrange(1, 4))
        lines = []
        for i in range(n):
            proto, num, state = ("tcp", 6, "ESTABLISHED") if i % 2 else ("udp", 17, "")
            if "protocols" in odd:
                proto, num, state = f"p{i}x", 253, ""
            if "states" in odd and proto == "tcp":
                state = f"S{i}"
            zone = i if "zones" in odd else 0
            dst = (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" if "addresses" in odd
                   else "10.0.0.2")
            port = i % 65536 if "ports" in odd else 443
            head = f"ipv4     2 {proto:<8} {num} {rng.randrange(1, 432000)} "
            head += f"{state} " if state else ""
            tuple_ = f"src=10.0.0.1 dst={dst} sport={1024 + i % 60000} dport={port}"
            lines.append(f"{head}{tuple_} src={dst} dst=10.0.0.1 sport={port} "
                         f"dport={1024 + i % 60000} [ASSURED] mark=0 zone={zone} use=2\n")
        (tree / "proc/net/nf_conntrack").write_text("".join(lines))
        ex.what.append(f"proc/net/nf_conntrack: {n} lines, made-up {', '.join(odd)}")
        ex.watch.append(tree)
        args = [*self.tree_args(tree), "--root", str(tree)]
        ex.commands += [("audit", ["audit", *args]),
                        ("collect", ["collect", *self.tree_args(tree)])]

    # (b) facts snapshots
    def _facts(self, rng: random.Random, ex: Example, d: Path) -> None:
        doc = json.loads(json.dumps(self.facts))
        text = None
        kind = rng.choice(["leaf", "leaf", "leaf", "sysctl", "sysctl", "deep", "truncate",
                           "bytes", "flows", "persist", "drop"])
        if kind in ("leaf", "drop"):
            parent, key, where = self._pick(rng, doc)
            if kind == "drop":
                del parent[key]
                ex.what.append(f"{where}: removed")
                ex.corrupt = where in ("host", "sysctl", "conntrack", "schema_version")
            else:
                parent[key], desc = self._bad_value(rng)
                ex.what.append(f"{where}: {desc}")
                ex.corrupt = (where.startswith(("host.mem_total_bytes", "host.cpus_online",
                                                "conntrack.loaded", "schema_version",
                                                "host.pointer_size"))
                              and desc != "null") or where in ("sysctl", "host") or (
                                  where.startswith("sysctl.")
                                  and integer_file(where.split(".value")[0].rsplit(".", 1)[-1]))
        elif kind == "sysctl":
            key = rng.choice([k for k in doc["sysctl"] if integer_file(k.rsplit(".", 1)[-1])])
            doc["sysctl"][key]["value"], desc = self._bad_value(rng, numeric=True)
            ex.what.append(f"sysctl.{key}.value: {desc}")
            ex.corrupt = True
        elif kind == "flows":
            doc["flows"] = rng.choice([{"source": "x"}, [], {"source": "procfs",
                                       "entries_read": -1, "entries_estimated": "x"}, 5])
            ex.what.append(f"flows: {json.dumps(doc['flows'])[:60]}")
            ex.corrupt = True
        elif kind == "persist":
            doc["persist"] = rng.choice([{"assignments": [{"key": 1}]}, [], "x",
                                        {"assignments": "x", "files": 5}])
            ex.what.append(f"persist: {json.dumps(doc['persist'])[:60]}")
            ex.corrupt = True
        elif kind == "deep":
            depth = rng.choice([1000, 100_000])
            text = json.dumps(doc).replace('"x86_64"', "[" * depth + "1" + "]" * depth, 1)
            ex.what.append(f"host.arch: nested {depth} deep")
            ex.corrupt = True
        elif kind == "truncate":
            full = json.dumps(doc, indent=1)
            text = full[:rng.randrange(1, len(full) - 2)]
            ex.what.append(f"truncated at {len(text)} of {len(full)}")
            ex.corrupt = True
        else:
            text = garbage(rng).decode("latin-1")
            ex.what.append("random bytes")
            ex.corrupt = True
        path = d / "facts.json"
        if text is None:
            text = json.dumps(doc, indent=1, allow_nan=True).replace('"__HUGE__"', "9" * 5000)
        path.write_text(text, encoding="latin-1" if kind == "bytes" else "utf-8")
        ex.watch.append(path)
        ex.commands += [("audit", ["audit", "--facts", str(path)]),
                        ("audit-sysctl", ["audit", "--format", "sysctl", "--facts", str(path)])]

    def _pick(self, rng: random.Random, doc: Any) -> tuple[Any, Any, str]:
        """A random (container, key) in doc, biased to the top levels."""
        parent, key, where = doc, rng.choice(list(doc)), ""
        where = str(key)
        while isinstance(parent[key], dict | list) and parent[key] and rng.random() < 0.7:
            parent = parent[key]
            key = rng.choice(list(parent)) if isinstance(parent, dict) else rng.randrange(
                len(parent))
            where += f".{key}"
        return parent, key, where

    @staticmethod
    def _bad_value(rng: random.Random, numeric: bool = False) -> tuple[Any, str]:
        choices: list[tuple[Any, str]] = [
            (-5, "-5"), (10 ** 30, "10**30"), ("__HUGE__", "5000 digits"),
            (float("nan"), "nan"), (float("inf"), "inf"), (1.5, "1.5"), ("12", '"12"'),
            ("x\n" + INJECTION, "string with a newline"), ([1, [2]], "a list"),
            ({"value": 1}, "an object"), (True, "true")]
        if not numeric:
            choices += [(None, "null"), ("", '""')]
        return rng.choice(choices)

    # (c) rule files
    def _rules(self, rng: random.Random, ex: Example, d: Path) -> None:
        rules = d / "rules"
        rules.mkdir()
        src = rng.choice(self.rule_files)
        text = src.read_text()
        kind = rng.choice(["newline", "newline", "expr", "number", "deep", "type",
                           "truncate", "duplicate", "bytes"])
        if kind == "newline":
            # a rule that sets a key on this host, so its texts reach the fragment
            src = RULES / rng.choice(["conntrack-max.toml", "hash-buckets.toml",
                                      "tcp-timeout-established.toml"])
            text = src.read_text()
            field_ = rng.choice(["summary", "title", "parameter", "recommended", "sources"])
            text, n = self._inject_field(text, field_)
            ex.what.append(f"{src.name}: newline + sysctl line in {field_} ({n})")
        elif kind == "expr":
            hostile = rng.choice(["'a' * 10 ** 10", "(" * 5000 + "1" + ")" * 5000,
                                  "[0] * 10 ** 9", "range(10 ** 9) | list | length",
                                  "9 ** 9 ** 9", "current.__class__", "'%s' % 10 ** 5000",
                                  "'1\\n" + INJECTION + "'", "1e400", "nan", "-1",
                                  "10 ** 30", "{}" + ".x" * 3000])
            target = rng.choice(["recommended", "when", "if"])
            text, n = re.subn(rf'(?m)^{target} = ".*"$',
                              f"{target} = {json.dumps(hostile)}", text, count=1)
            ex.what.append(f"{src.name}: {target} = {hostile[:40]!r} ({n})")
        elif kind == "number":
            nums = list(re.finditer(r"(?<![\w.\"])[0-9]+(\.[0-9]+)?(?![\w.\"])", text))
            if nums:
                m = rng.choice(nums)
                new = rng.choice(["nan", "inf", "-inf", "1e400", "9" * 5000, "-0"])
                text = text[:m.start()] + new + text[m.end():]
                ex.what.append(f"{src.name}: {m.group()} -> {new[:12]}")
        elif kind == "deep":
            depth = rng.choice([500, 50_000])
            text = text.replace("sources = [", "sources = " + "[" * depth + '"x"'
                                + "]" * depth + ", [", 1)
            ex.what.append(f"{src.name}: sources nested {depth} deep")
        elif kind == "type":
            field_ = rng.choice(["id", "when", "recommended", "parameter", "severity", "let",
                                 "sources", "evidence", "title"])
            value = rng.choice(["5", "true", "[1, 2]", "{a = 1}", '""', "1.5"])
            text, n = re.subn(rf"(?m)^{field_} = .*$", f"{field_} = {value}", text, count=1)
            if n == 0:
                text = f"{field_} = {value}\n" + text
            ex.what.append(f"{src.name}: {field_} = {value}")
            ex.corrupt = field_ in ("id", "when", "recommended", "severity")
        elif kind == "truncate":
            text = text[:rng.randrange(1, len(text))]
            ex.what.append(f"{src.name}: truncated at {len(text)}")
        elif kind == "duplicate":
            (rules / "copy.toml").write_text(text)
            ex.what.append(f"{src.name}: twice in one directory")
            ex.corrupt = True
        else:
            text = garbage(rng).decode("latin-1")
            ex.what.append(f"{src.name}: random bytes")
        try:
            tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError, ValueError):
            ex.corrupt = True
        (rules / src.name).write_text(text, encoding="latin-1" if kind == "bytes" else "utf-8")
        ex.watch.append(rules)
        self._tree_commands(ex, self.base, ["--rules-dir", str(rules)], real=False)

    @staticmethod
    def _inject_field(text: str, name: str) -> tuple[str, int]:
        payload = "\\n" + INJECTION + "\\n"
        if name == "sources":
            return re.subn(r'(?m)^(sources = \[\s*")', r"\g<1>" + payload.replace("\\", "\\\\"),
                           text, count=1)
        if name == "recommended":
            return re.subn(r'(?m)^recommended = ".*"$',
                           'recommended = "\'1' + payload.replace("\\", "\\\\") + '\'"',
                           text, count=1)
        return re.subn(rf'(?m)^({name} = ")', r"\g<1>" + payload.replace("\\", "\\\\"),
                       text, count=0 if name == "summary" else 1)

    # (d) profile files
    def _profiles(self, rng: random.Random, ex: Example, d: Path) -> None:
        rules = d / "rules"
        (rules / "profiles").mkdir(parents=True)
        src = rng.choice(self.profile_files)
        text = src.read_text()
        name = tomllib.loads(text)["name"]
        kind = rng.choice(["reason", "number", "number", "type", "extends", "deep",
                           "truncate", "description"])
        if kind == "reason":
            text, n = re.subn(r'(?m)^(reason = ")', r"\g<1>\\n" + INJECTION + r"\\n", text)
            ex.what.append(f"{src.name}: newline + sysctl line in reason ({n})")
        elif kind == "description":
            text = re.sub(r'(?m)^(description = ")', r"\g<1>\\n" + INJECTION + r"\\n", text)
            ex.what.append(f"{src.name}: newline + sysctl line in description")
        elif kind in ("number", "type"):
            nums = list(re.finditer(r"(?m)^(\w+) = ([0-9.]+|true|false)$", text))
            if nums:
                m = rng.choice(nums)
                new = (rng.choice(["nan", "inf", "-inf", "-1", "-0.5", "1e400", "9" * 5000,
                                   "10000000000000000000000"]) if kind == "number"
                       else rng.choice(['"x"', "[1]", "{a = 1}", "true"]))
                text = text[:m.start(2)] + new + text[m.end(2):]
                ex.what.append(f"{src.name}: {m.group(1)} = {new[:12]}")
                ex.corrupt = not (new == "true" and m.group(2) in ("true", "false")) and \
                    new not in ("10000000000000000000000", "9" * 5000)
        elif kind == "extends":
            new = rng.choice([name, "nope", "5"])
            text = re.sub(r'(?m)^extends = .*$', "", text)
            text = text.replace(f'name = "{name}"', f'name = "{name}"\nextends = '
                                + (new if new == "5" else json.dumps(new)), 1)
            ex.what.append(f"{src.name}: extends = {new}")
            ex.corrupt = True
        elif kind == "deep":
            depth = rng.choice([500, 50_000])
            text += f"\n[x]\ny = {'[' * depth}1{']' * depth}\n"
            ex.what.append(f"{src.name}: nested {depth} deep")
        else:
            text = text[:rng.randrange(1, len(text))]
            ex.what.append(f"{src.name}: truncated at {len(text)}")
        try:
            tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError, ValueError):
            ex.corrupt = True
        (rules / "profiles" / src.name).write_text(text)
        ex.watch.append(rules)
        self._tree_commands(ex, self.base, ["--rules-dir", str(rules), "--profile", name],
                            real=False)

    # (e) rollback state files
    def _state(self, rng: random.Random, ex: Example, d: Path) -> None:
        tree = self._tree(d)
        root = ex.scratch
        state_dir = root / "var/lib/ct-tune"
        state_dir.mkdir(parents=True)
        doc = json.loads(json.dumps(self.state))
        doc["procfs"] = str(tree / "proc")
        doc["live"] = [{"key": "net.netfilter.nf_conntrack_max",
                        "path": str(tree / "proc/sys/net/netfilter/nf_conntrack_max"),
                        "value": "65536"}]
        text = None
        kind = rng.choice(["path", "path", "key", "livepath", "type", "type", "truncate",
                           "deep", "content", "procfs"])
        outside = rng.choice(["../outside", "/etc/passwd", f"{self.sentinel}/outside.txt",
                              "etc/sysctl.d/../../../../x", "../../sentinel/outside.txt",
                              "etc/../../x", "", ".", "var/lib/ct-tune/rollback.json",
                              "etc/sysctl.d/99-ct-tune.conf\n" + INJECTION])
        if kind == "path":
            doc["files"][rng.randrange(len(doc["files"]))]["path"] = outside
            ex.what.append(f"files[].path = {outside!r}")
            ex.corrupt = True
        elif kind == "key":
            key = rng.choice(["kernel.core_pattern", "/proc/sys/kernel/core_pattern",
                              "../../kernel/core_pattern", "net.netfilter.nf_conntrack_max\nx",
                              "net.ipv4.ip_forward", ""])
            doc["live"][0]["key"] = key
            ex.what.append(f"live[].key = {key!r}")
            ex.corrupt = True
        elif kind == "livepath":
            doc["live"][0]["path"] = rng.choice(["/proc/sys/kernel/core_pattern",
                                                 f"{self.sentinel}/outside.txt", "../x"])
            ex.what.append(f"live[].path = {doc['live'][0]['path']!r}")
            ex.corrupt = True
        elif kind == "type":
            where = rng.choice(["files", "live", "version", "files.0", "live.0.value",
                                "files.0.content", "files.0.path", "live.0.key", "procfs"])
            value, desc = self._bad_value(rng)
            target: Any = doc
            *parts, last = where.split(".")
            for p in parts:
                target = target[int(p)] if isinstance(target, list) else target[p]
            if isinstance(target, list):
                target[int(last)] = value
            else:
                target[last] = value
            ex.what.append(f"{where}: {desc}")
            ex.corrupt = not (where == "files.0.content" and (value is None or
                                                              isinstance(value, str)))
        elif kind == "truncate":
            full = json.dumps(doc, indent=1)
            text = full[:rng.randrange(1, len(full) - 2)]
            ex.what.append(f"truncated at {len(text)}")
            ex.corrupt = True
        elif kind == "deep":
            depth = rng.choice([1000, 100_000])
            text = json.dumps(doc).replace('"live": [', '"live": [' + "[" * depth + "]" * depth
                                           + ",", 1)
            ex.what.append(f"live nested {depth} deep")
            ex.corrupt = True
        elif kind == "content":
            doc["files"][0]["content"] = f"net.netfilter.nf_conntrack_max = 5\n{INJECTION}\n"
            ex.what.append("files[0].content carries a foreign sysctl line")
        else:
            doc["procfs"] = rng.choice(["/proc", "relative", "", str(self.sentinel)])
            ex.what.append(f"procfs = {doc['procfs']!r}")
            ex.corrupt = doc["procfs"] != str(tree / "proc")
        name = rng.choice(["rollback.json", "rollback.json", "pending.json"])
        if text is None:
            text = json.dumps(doc, indent=1).replace('"__HUGE__"', "9" * 5000)
        (state_dir / name).write_text(text)
        ex.watch += [tree]
        ex.commands.append(("rollback-dry-run", ["rollback", "--dry-run", "--root", str(root),
                                                 "--procfs", str(tree / "proc"),
                                                 "--lock-wait", "0"]))

    # (f) scratch roots with symlinks planted in them
    def _roots(self, rng: random.Random, ex: Example, d: Path) -> None:
        tree = self._tree(d)
        root = ex.scratch
        root.mkdir()
        for _ in range(rng.choice([1, 2])):
            rel, target = rng.choice([
                ("etc/sysctl.d", self.sentinel / "etc/sysctl.d"),
                ("etc", self.sentinel / "etc"),
                ("var/lib/ct-tune", self.sentinel / "var/lib/ct-tune"),
                ("var", self.sentinel / "var"),
                ("etc/sysctl.d/99-ct-tune.conf", self.sentinel / "outside.txt"),
                ("etc/modprobe.d", self.sentinel),
                ("etc/modules-load.d/ct-tune.conf", self.sentinel / "outside.txt"),
                ("etc/sysctl.d/99-ct-tune.conf", Path("../../../sentinel-rel")),
            ])
            link = root / rel
            if link.exists() or link.is_symlink():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
            ex.what.append(f"{rel} -> {target}")
        if rng.random() < 0.3:
            stale = root / "etc/sysctl.d/.99-ct-tune.conf.tmp"
            if not (root / "etc/sysctl.d").is_symlink() and not (root / "etc").is_symlink():
                stale.parent.mkdir(parents=True, exist_ok=True)
                stale.write_text("stale\n")
                ex.what.append("a stale .tmp file")
        ex.watch.append(tree)
        self._tree_commands(ex, tree, real=True)
        ex.commands.append(("rollback", ["rollback", "--root", str(root), "--procfs",
                                         str(tree / "proc"), "--lock-wait", "0"]))


# ------------------------------------------------------------------ judging


@dataclass
class Verdict:
    example: Example
    found: dict[str, list[str]] = field(default_factory=dict)


def judge(fz: Fuzzer, ex: Example) -> Verdict:
    v = Verdict(ex, {c: [] for c in CHECKS})
    before = fingerprint(ex.watch)
    for name, args in ex.commands:
        run = run_cli(args, fz.timeout)
        if run.hang:  # the rest would hang on the same input: one is enough
            v.found["hang"].append(f"{name}: no answer in {fz.timeout:g} s")
            break
        problem = internal(run)
        if problem:
            v.found["internal"].append(f"{name}: {problem}")
        if run.peak_rss_mib > MEMORY_FLAG_MIB:
            v.found["memory"].append(f"{name}: peak RSS {run.peak_rss_mib} MiB")
        if name == "audit-sysctl" and run.code in (0, 1, 2):
            v.found["injected"] += [f"{name}: {x[:120]}" for x in injected_lines(run.stdout)]
        if name == "apply-dry-run":
            v.found["injected"] += [f"{name}: {x[:120]}" for x in diff_injected(run.stdout)]
        if name in ("audit", "rollback-dry-run") and run.code == 0 and ex.corrupt:
            v.found["false_green"].append(f"{name}: exit 0")
        if name == "apply":
            v.found["injected"] += written_injected(ex.scratch)
    after = fingerprint(ex.watch)
    v.found["outside"] += [f"changed: {p}" for p in changed(before, after)]
    return v


def written_injected(scratch: Path) -> list[str]:
    """Foreign lines in the files apply wrote where they belong (a planted symlink on the
    way is the outside check's business)."""
    found = []
    for rel in FRAGMENTS:
        f = scratch / rel
        on_the_way = [scratch / p for p in list(Path(rel).parents)[:-1]]
        if any(p.is_symlink() for p in [*on_the_way, f]) or not f.is_file():
            continue
        found += [f"{rel}: {x[:120]}" for x in injected_lines(
            f.read_text(errors="replace"), Path(rel).parent.name)]
    return found


def warm_up() -> None:
    """Compile the shipped rules once in this process: every forked child inherits them."""
    from ct_tune import cli

    argv, out, err = sys.argv, sys.stdout, sys.stderr
    host = ["--procfs", str(HOST / "proc"), "--sysfs", str(HOST / "sys")]
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for args in (["audit", *host], ["audit", "--format", "sysctl", *host],
                         ["apply", "--dry-run", "--no-live", "--root", scratch, *host]):
                sys.argv = ["ct-tune", *args]
                sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
                with contextlib.suppress(SystemExit):
                    cli.main()
    finally:
        sys.argv, sys.stdout, sys.stderr = argv, out, err


def fuzz(examples: int, seed: int, timeout: float, categories: list[str],
         only: dict[str, list[int]] | None = None,
         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ct-tune-fuzz-"))
    os.environ.setdefault("CT_TUNE_CACHE_DIR", str(work / "cache"))
    try:
        warm_up()
        fz = Fuzzer(work, seed, timeout)
        results: dict[str, Any] = {}
        for cat in categories:
            counts = dict.fromkeys(("examples", *CHECKS), 0)
            failures: list[dict[str, Any]] = []
            indices = only[cat] if only and cat in only else range(examples)
            for i in indices:
                v = judge(fz, fz.example(cat, i))
                counts["examples"] += 1
                for check, items in v.found.items():
                    if items:
                        counts[check] += 1
                        failures.append({"check": check, "index": i, "input": v.example.what,
                                         "seen": items[:3]})
                shutil.rmtree(work / f"{cat}-{i}", ignore_errors=True)
                if progress:
                    progress(f"{cat} {counts['examples']}/{len(indices)}")
            results[cat] = {"counts": counts, "failures": failures}
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(results: dict[str, Any]) -> str:
    cols = ["examples", *CHECKS]
    rows = [[cat, *(str(r["counts"][c]) for c in cols)] for cat, r in results.items()]
    rows.append(["total", *(str(sum(r["counts"][c] for r in results.values()))
                            for c in cols)])
    head = ["category", *cols]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [head, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=50, help="examples per category")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per command")
    ap.add_argument("--category", default=",".join(CATEGORIES))
    ap.add_argument("--replay", metavar="I,J", help="run only these examples (indices)")
    ap.add_argument("--pick", action="append", default=[], metavar="CATEGORY=I,J",
                    help="run only these examples of CATEGORY (repeatable; implies its "
                    "category)")
    ap.add_argument("--json", action="store_true", help="counts and failures as JSON")
    ap.add_argument("--show", type=int, default=3, metavar="N",
                    help="print up to N failing examples per category and check")
    a = ap.parse_args()
    picks = {c: [int(i) for i in idx.split(",")]
             for c, idx in (p.split("=", 1) for p in a.pick)}
    cats = list(picks) if picks else [c for c in a.category.split(",") if c]
    unknown = set(cats) - set(CATEGORIES)
    if unknown:
        ap.error(f"unknown category: {', '.join(sorted(unknown))}")
    started = time.monotonic()
    tty = sys.stderr.isatty()
    if a.replay:
        picks = {c: [int(i) for i in a.replay.split(",")] for c in cats}
    results = fuzz(a.examples, a.seed, a.timeout, cats, picks,
                   (lambda s: print(f"\r{s}   ", end="", file=sys.stderr)) if tty else None)
    if tty:
        print(file=sys.stderr)
    if a.json:
        print(json.dumps(results, indent=1))
        return
    print(table(results))
    print(f"\nseed {a.seed}, {time.monotonic() - started:.0f} s")
    for cat, r in results.items():
        for check in CHECKS:
            shown = [f for f in r["failures"] if f["check"] == check][:a.show]
            for f in shown:
                print(f"\n{cat} {check} (--category {cat} --seed {a.seed} --replay "
                      f"{f['index']}): {'; '.join(f['input'])}")
                for s in f["seen"]:
                    print(f"    {s}")


if __name__ == "__main__":
    main()
