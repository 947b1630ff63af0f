"""Shared fixtures: captured host trees and running the real CLI."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ct_tune import facts
from ct_tune.capture import apply_modes

HOSTS = Path(__file__).parent / "hosts"
ROOT = Path(__file__).parent.parent

# The tests' own expression cache, never the host's /var/cache/ct-tune: set before any
# ct-tune code runs, and inherited by every ct-tune process the tests start.
_CACHE = tempfile.mkdtemp(prefix="ct-tune-test-cache-")
os.environ["CT_TUNE_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def materialize(name: str, dest: Path) -> facts.Roots:
    """Copy a captured tree and restore its file modes (git keeps only +x)."""
    target = dest / name
    shutil.copytree(HOSTS / name, target)
    apply_modes(target)
    return facts.Roots(target / "proc", target / "sys")


@pytest.fixture
def tree(tmp_path: Path):
    """tree('defaults-16g') -> Roots of a private copy of that captured host."""
    return lambda name: materialize(name, tmp_path)


def run_cli(*args: str, input: str | None = None, env: dict | None = None,
            netns: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ct-tune as a user would (a separate process), optionally inside a netns."""
    cmd = [sys.executable, "-m", "ct_tune", *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, input=input, env=full_env,
                          timeout=timeout, check=False)


def tree_args(roots: facts.Roots) -> list[str]:
    return ["--procfs", str(roots.procfs), "--sysfs", str(roots.sysfs)]


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def unprivileged_python(tmp_path_factory):
    """An interpreter line an unprivileged user can run ct-tune with.  The checkout and
    the virtualenv may sit in a directory only root can enter (a fresh mktemp clone), so
    ct-tune, its rules and its dependencies are copied to a world-readable directory;
    the system Python of the same version stands in when ours is under a private home."""
    import importlib.util

    shared = Path(tempfile.mkdtemp(prefix="ct-tune-nobody-"))
    try:
        for name in ("ct_tune", "click", "jinja2", "markupsafe", "tabulate"):
            origin = Path(importlib.util.find_spec(name).origin)
            src = origin.parent if origin.name == "__init__.py" else origin
            dst = shared / src.name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        shutil.copytree(ROOT / "rules", shared / "rules")
        for p in [shared, *shared.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        for exe in (sys.executable, f"/usr/bin/{version}"):
            cmd = [*NOBODY, "env", f"PYTHONPATH={shared}", "HOME=/tmp", exe]
            if subprocess.run([*cmd, "-c", "import ct_tune.cli"], capture_output=True,
                              timeout=60, check=False).returncode == 0:
                yield cmd
                return
        pytest.skip("no Python interpreter here that an unprivileged user can run")
    finally:
        shutil.rmtree(shared, ignore_errors=True)
