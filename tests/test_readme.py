"""README's set-up commands are the project's contract with a new user and with CI."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())[:2]


def test_readme_has_run_and_test_commands():
    run, test = readme_commands()
    assert "ct-tune audit" in run and "pip install" in run
    assert "pytest" in test and "pip install" in test


def test_ci_runs_the_readme_test_command():
    assert "README.md" in (ROOT / ".ci/run").read_text()


def test_ci_runs_the_host_modifying_tests():
    """CI machines are throwaway: .ci/run opts in to the tests that change host values."""
    assert "export CT_TUNE_HOST_TESTS=1" in (ROOT / ".ci/run").read_text()


def test_readme_example_output_is_what_audit_prints_at_80_columns(tree):
    """The README shows the table of tests/hosts/nearly-full-drops at 80 columns: it must be
    what ct-tune prints today, byte for byte."""
    from conftest import run_cli, tree_args

    shown = re.search(r"at 80 columns \(`tests/hosts/nearly-full-drops`\):\n\n```text\n(.+?)```",
                      (ROOT / "README.md").read_text(), re.S)
    assert shown is not None
    proc = run_cli("audit", *tree_args(tree("nearly-full-drops")),
                   env={"COLUMNS": "80", "NO_COLOR": ""})
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == shown.group(1)
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
