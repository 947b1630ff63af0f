"""launch.py starts reading the live table before click and ct-tune's modules load, and
ctsource takes that reader over only for the file it was started on."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest
from conftest import ROOT
from flowgen import write_dump

from ct_tune import ctsource, reader
from ct_tune.launch import reads_live_table


@pytest.mark.parametrize(("argv", "reads"), [
    (["ct-tune", "collect"], True),
    (["ct-tune", "collect", "--duration", "5", "-o", "host.json"], True),
    (["ct-tune", "audit", "--explain", "--sample-limit", "5000"], True),
    (["ct-tune", "audit", "--no-sample"], False),
    (["ct-tune", "audit", "--facts", "host.json"], False),
    (["ct-tune", "audit", "--facts=host.json"], False),
    (["ct-tune", "collect", "--procfs", "/tmp/tree/proc"], False),
    (["ct-tune", "collect", "--table-source", "conntrack"], False),
    (["ct-tune", "audit", "--help"], False),
    (["ct-tune", "check"], False),           # samples only with --sample
    (["ct-tune", "apply", "--dry-run"], False),
    (["ct-tune"], False),
    (["ct-tune", "--version"], False),
])
def test_which_command_lines_read_the_live_table(argv, reads):
    assert reads_live_table(argv) is reads


def test_the_reader_starts_before_click_and_pathlib_are_imported(tree):
    """What launch imports before the reader runs: nothing but itself and reader.py."""
    roots = tree("defaults-16g")
    write_dump(roots, [{"class": "udp/unreplied", "count": 20, "dport": 53}])
    # (an editable install's path hook may have imported pathlib before: only what
    # launch itself brings in counts)
    script = ("import sys\nbefore = set(sys.modules)\nfrom ct_tune import launch, reader\n"
              "ok = reader.start_early(sys.argv[1])\n"
              "print(ok, ' '.join(sorted(m for m in set(sys.modules) - before "
              "if m.split('.')[0] in ('click', 'pathlib', 'ct_tune', 'jinja2'))))\n")
    out = subprocess.run([sys.executable, "-c", script, str(roots.proc("net/nf_conntrack"))],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "ct_tune", "ct_tune.launch", "ct_tune.reader"]


def _children() -> list[psutil.Process]:
    return psutil.Process().children()


def test_the_table_reader_is_taken_over_for_its_own_file(tree, monkeypatch):
    roots = tree("defaults-16g")
    write_dump(roots, [{"class": "udp/unreplied", "count": 300, "dport": 53}])
    path = roots.proc("net/nf_conntrack")
    assert reader.start_early(str(path))
    started = [p.pid for p in _children()]
    assert len(started) == 1

    def no_second_reader(fd):
        raise AssertionError("a second reader was started")

    monkeypatch.setattr(reader, "spawn", no_second_reader)
    with ctsource.table_blocks(roots, "procfs") as (_, blocks):
        assert [p.pid for p in _children()] == started
        text = "".join(blocks)
    assert text == path.read_text()
    assert not _children()  # the reader was waited for


def test_a_reader_started_on_another_file_is_stopped(tree):
    roots = tree("defaults-16g")
    write_dump(roots, [{"class": "udp/unreplied", "count": 300, "dport": 53}])
    other = roots.procfs.parent / "other"
    other.write_text("not the table\n")
    assert reader.start_early(str(other))
    with ctsource.table_blocks(roots, "procfs") as (_, blocks):
        text = "".join(blocks)
    assert text == roots.proc("net/nf_conntrack").read_text()
    assert not _children() and reader.take_early(str(other)) is None


def test_nothing_is_started_early_on_what_is_not_a_regular_file(tmp_path):
    assert not reader.start_early(str(tmp_path))          # a directory
    assert not reader.start_early(str(tmp_path / "none"))  # missing
    assert not _children() and reader.take_early(str(tmp_path)) is None
