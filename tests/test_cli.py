"""Exit status, output streams and the JSON schema, as a monitoring system sees them."""

from __future__ import annotations

import json

from conftest import run_cli, tree_args

FINDING_KEYS = {"rule", "severity", "parameter", "current", "recommended", "summary",
                "explanation", "evidence"}


def test_json_schema_fields(tree):
    proc = run_cli("audit", "--format", "json", *tree_args(tree("keepalive-trap")))
    report = json.loads(proc.stdout)
    assert report["schema_version"] == 2
    assert report["status"] == "warning"
    assert set(report) >= {"schema_version", "status", "findings", "facts"}
    for f in report["findings"]:
        assert set(f) >= FINDING_KEYS
        assert f["severity"] in ("ok", "info", "warning", "critical")
        assert f["parameter"] is None or f["parameter"].startswith("net.")


def test_usage_error_exits_3_not_2(tree):
    """2 means CRITICAL to a monitoring system: a typo must not page anyone as critical."""
    proc = run_cli("audit", "--format", "yaml", *tree_args(tree("defaults-16g")))
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert "Invalid value for '--format'" in proc.stderr


def test_missing_facts_file(tmp_path):
    proc = run_cli("audit", "--facts", str(tmp_path / "nope.json"))
    assert proc.returncode == 3
    assert proc.stderr.strip() == f"ct-tune: {tmp_path / 'nope.json'}: cannot read: " \
                                  "No such file or directory"


def test_table_output_and_status_line(tree):
    # piped, no COLUMNS: laid out for 80 columns (one block per finding), the status one line
    proc = run_cli("audit", *tree_args(tree("nearly-full-drops")),
                   env={"COLUMNS": "", "NO_COLOR": ""})
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines[:-1]) <= 80
    # worst first
    assert lines[0].startswith("critical  ")
    assert lines[-1].startswith("status: CRITICAL - ")
    assert "\x1b[" not in proc.stdout


def test_version_and_module_entry_point():
    proc = run_cli("--version")
    assert proc.returncode == 0 and "ct-tune" in proc.stdout


def test_collect_into_a_fifo_writes_into_it_and_leaves_it_a_fifo(tmp_path, tree):
    # collect -o /dev/null once replaced the device node with a regular file: a FIFO
    # stands in for any non-regular target without touching the host's /dev.
    import os
    import stat
    import threading

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = run_cli("collect", "--no-sample", "-o", str(fifo), *tree_args(tree("defaults-16g")))
    reader.join(timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert json.loads(got[0])["schema"] == "ct-tune/facts"
