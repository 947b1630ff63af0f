"""One timed run of a command, for the benchmarks: wall time, peak RSS and CPU seconds of
the child and everything it waited for (getrusage(RUSAGE_CHILDREN) before and after)."""

from __future__ import annotations

import os
import resource
import time
from typing import NamedTuple


class Run(NamedTuple):
    seconds: float
    peak_rss_kib: int
    user: float
    system: float


def run(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """Run argv (output to /dev/null); exit statuses 0-2 are success (audit exits 1/2 for
    warning/critical findings), anything else, or a signal, stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if env is None:
            os.execvp(argv[0], argv)
        os.execvpe(argv[0], argv, env)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not 0 <= os.waitstatus_to_exitcode(status) <= 2:
        raise SystemExit(f"benchmark command failed: {argv}")
    return Run(elapsed, usage.ru_maxrss, after.ru_utime - before.ru_utime,
               after.ru_stime - before.ru_stime)
