"""Output that cannot be written is an error a script sees: exit 3 and one line on stderr.

Each command runs as a separate process, as a pipeline or a cron job would run it, with
stdout a pipe nobody reads, closed, or /dev/full.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, tree_args


def _commands(roots, scratch) -> dict[str, list[str]]:
    host = tree_args(roots)
    return {
        "audit": ["audit", *host],
        "audit-json": ["audit", "--format", "json", *host],
        "audit-sysctl": ["audit", "--format", "sysctl", *host],
        "audit-explain": ["audit", "--explain", *host],
        "collect": ["collect", *host],
        "rules-list": ["rules", "list"],
        "rules-show": ["rules", "show", "conntrack-max"],
        "profiles-list": ["profiles", "list"],
        "apply-dry-run": ["apply", "--dry-run", "--no-live", "--root", str(scratch), *host],
        "help": ["audit", "--help"],  # written by click itself
        "version": ["--version"],
    }


def _run(args: list[str], stdout, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ct_tune", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, preexec_fn=preexec,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
                          check=False)


@pytest.fixture
def commands(tree, tmp_path):
    return _commands(tree("defaults-16g"), tmp_path / "scratch")


def _broken_pipe(args):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the child writes anything
    try:
        return _run(args, w)
    finally:
        os.close(w)


COMMANDS = ["audit", "audit-json", "audit-sysctl", "audit-explain", "collect", "rules-list",
            "rules-show", "profiles-list", "apply-dry-run", "help", "version"]


@pytest.mark.parametrize("name", COMMANDS)
def test_reader_gone_is_exit_3_with_one_line(commands, name):
    proc = _broken_pipe(commands[name])
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.splitlines()
    # exactly one line about it, and none of Python's "Exception ignored" or a traceback
    assert [x for x in lines if "stdout" in x or "Exception" in x or "Traceback" in x] \
        == ["ct-tune: stdout: Broken pipe"]


@pytest.mark.parametrize("name", ["audit", "audit-json", "collect", "rules-list",
                                  "profiles-list", "apply-dry-run"])
def test_closed_stdout_is_exit_3_not_silent_success(commands, name):
    proc = _run(commands[name], None, preexec=lambda: os.close(1))  # like `ct-tune ... >&-`
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines()[-1] == "ct-tune: stdout: Bad file descriptor"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["audit", "audit-json", "collect", "rules-show", "help"])
def test_full_device_is_a_clean_write_error(commands, name):
    with open("/dev/full", "w") as full:
        proc = _run(commands[name], full)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == "ct-tune: stdout: No space left on device\n"


def test_collect_to_a_full_device_names_it(tree):
    proc = _run(["collect", "-o", "/dev/full", *tree_args(tree("defaults-16g"))],
                subprocess.PIPE)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr == "ct-tune: /dev/full: cannot write: No space left on device\n"


def test_stdout_closed_with_stderr_closed_too_is_still_exit_3(commands):
    def close_both():
        os.close(1)
        os.close(2)
    proc = subprocess.run([sys.executable, "-m", "ct_tune", *commands["collect"]],
                          preexec_fn=close_both, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=120, check=False)
    assert proc.returncode == 3


def test_a_reader_that_stays_gets_everything(commands):
    # control: the same plumbing with a working pipe changes nothing
    proc = _run(commands["collect"], subprocess.PIPE)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("{") and proc.stdout.endswith("}\n")
