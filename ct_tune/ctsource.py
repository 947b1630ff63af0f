"""Where the conntrack table dump comes from: procfs, or ctnetlink via conntrack(8).

CONFIG_NF_CONNTRACK_PROCFS lost "default y" in 2022, so /proc/net/nf_conntrack
is often missing on new kernels.  Then the table is dumped with ``conntrack -L``
(conntrack-tools, over ctnetlink).  No shell is involved: an argument list, a
timeout, and an error that says what to install.  The source used is recorded
in the facts so a reader knows where the numbers came from.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from ct_tune.errors import CtTuneError
from ct_tune.facts import Roots

CONNTRACK_TIMEOUT = 300


class SourceError(CtTuneError):
    """The table cannot be read here (exit 3: could not assess)."""


@contextmanager
def table_lines(roots: Roots, source: str = "auto") -> Iterator[tuple[str, Iterator[str]]]:
    """Yield (source description, line iterator) for the conntrack table.

    source: "auto" (procfs when present, else conntrack -L), "procfs" or "conntrack".
    """
    path = roots.proc("net/nf_conntrack")
    if source == "procfs" or (source == "auto" and path.exists()):
        try:
            f = open(path, encoding="utf-8", errors="replace", buffering=1 << 20)  # noqa: SIM115
        except OSError as e:
            raise SourceError(f"{path}: cannot read: {e.strerror}") from None
        with f:
            yield str(path), f
        return
    if not roots.live and source == "auto":
        raise SourceError(f"{path}: not in the captured tree (capture it, or use --no-sample)")
    exe = shutil.which("conntrack")
    if exe is None:
        raise SourceError(f"{path}: missing (kernel built without CONFIG_NF_CONNTRACK_PROCFS) "
                          "and conntrack(8) is not installed: install conntrack-tools, or use "
                          "--no-sample")
    proc = subprocess.Popen([exe, "-L"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", bufsize=1 << 20)
    assert proc.stdout is not None
    try:
        yield f"{exe} -L (ctnetlink)", proc.stdout
    finally:
        proc.stdout.close()
        try:
            _, err = proc.communicate(timeout=CONNTRACK_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise SourceError(f"{exe} -L: no answer in {CONNTRACK_TIMEOUT} s") from None
    # -SIGPIPE: we stopped reading early (--sample-limit) and closed the pipe ourselves.
    if proc.returncode not in (0, None, -signal.SIGPIPE):
        raise SourceError(f"{exe} -L: exit {proc.returncode}: {err.strip()[:200]}")


def conntrack_stats(exe: str) -> dict:
    """`conntrack -S` (per-CPU key=value lines) in the shape of parse_conntrack_stat."""
    out = _run([exe, "-S"])
    totals: dict[str, int] = {}
    cpus = 0
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "cpu" not in fields:
            continue
        cpus += 1
        for k, v in fields.items():
            if k != "cpu" and v.isdigit():
                totals[k] = totals.get(k, 0) + int(v)
    return {"source": f"{exe} -S (ctnetlink)", "columns": sorted(totals), "cpus": cpus,
            "entries": 0, "counters": totals}


def _run(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceError(f"{cmd[0]}: {e}") from None
    if proc.returncode != 0:
        raise SourceError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()[:200]}")
    return proc.stdout
