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
