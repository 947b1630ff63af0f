"""What the benchmarks share: one timed run of a command (wall time, peak RSS and CPU
seconds of the child and everything it waited for: getrusage(RUSAGE_CHILDREN) before and
after), and another revision's ct_tune as files, to time against in the same run."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from typing import NamedTuple

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Run(NamedTuple):
    seconds: float
    peak_rss_kib: int
    user: float
    system: float


def run(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Run:
    """Run argv (output to /dev/null) in cwd; exit statuses 0-2 are success (audit exits 1/2
    for warning/critical findings), anything else, or a signal, stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        if cwd is not None:
            os.chdir(cwd)
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


def install(into: str, ref: str | None = None) -> str:
    """A fresh virtualenv under `into` with this checkout (or revision `ref` of it)
    installed as users install it (`pip install .`: bytecode compiled, no editable-install
    path hooks at start-up); returns its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", os.path.join(into, "venv")], check=True)
    python = os.path.join(into, "venv", "bin", "python")
    source = CHECKOUT
    if ref is not None:
        source = os.path.join(into, "src")
        os.mkdir(source)
        archive = subprocess.run(["git", "-C", CHECKOUT, "archive", ref], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", source], input=archive, check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", source], check=True,
                   stdout=subprocess.DEVNULL)
    return python


def export(ref: str, into: str) -> None:
    """The ct_tune package and rules of revision ref, as files under into (run
    ``python -m ct_tune`` with into as the working directory to time them)."""
    archive = subprocess.run(["git", "-C", CHECKOUT, "archive", ref, "ct_tune", "rules"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
