"""reader.Reader: dd is never left blocked on a full pipe while ct-tune starts (a thread
empties it, up to PREFETCH_BYTES), the bytes come out whole and in order, and every way
of stopping leaves no process behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest
from conftest import ROOT
from test_flowblocks import TIMEOUTS, kernel_like_table

from ct_tune import ctsource, reader
from ct_tune.facts import Roots
from ct_tune.flows import FlowStats

needs_dd = pytest.mark.skipif(shutil.which("dd") is None, reason="no dd(1) on PATH")


def _children() -> list[psutil.Process]:
    return psutil.Process().children()


def _wait(pred, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _table(tmp_path, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    path = tmp_path / "nf_conntrack"
    path.write_bytes(data)
    return str(path), data


def _read_all(r: reader.Reader) -> bytes:
    with r.stream() as s:
        return s.read()


@needs_dd
def test_dd_finishes_a_dump_larger_than_the_pipe_before_anything_reads_it(tmp_path):
    """Three times the pipe: without the thread dd would wait, and the kernel with it,
    until the sample started reading."""
    path, data = _table(tmp_path, 3 * reader.PIPE_BYTES)
    assert reader.start_early(path)
    fd, r = reader.take_early(path)
    try:
        assert _wait(lambda: _exited(r.pid)), "dd is blocked on a full pipe"
        assert _read_all(r) == data
        assert r.finish()[0] == 0
    finally:
        os.close(fd)
    assert not _children()


@needs_dd
def test_no_more_than_prefetch_bytes_are_held(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "PREFETCH_BYTES", 2 * reader.PIPE_BYTES)
    path, data = _table(tmp_path, 12 * reader.PIPE_BYTES)
    fd = os.open(path, os.O_RDONLY)
    r = reader.spawn(fd)
    try:
        assert _wait(lambda: r._held >= reader.PREFETCH_BYTES)
        time.sleep(0.2)  # dd goes on only as far as the pipe and its own block
        assert r._held < reader.PREFETCH_BYTES + reader.PIPE_BYTES
        assert not _exited(r.pid)
        got = _read_all(r)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert r.finish()[0] == 0
    finally:
        r.finish()
        os.close(fd)
    assert not _children()


@needs_dd
def test_stopping_a_reader_blocked_on_a_full_pipe(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "PREFETCH_BYTES", reader.PIPE_BYTES)
    path, data = _table(tmp_path, 8 * reader.PIPE_BYTES)
    fd = os.open(path, os.O_RDONLY)
    r = reader.spawn(fd)
    try:
        with r.stream() as s:
            assert s.read(1000) == data[:1000]
        time.sleep(0.2)  # dd fills the pipe again and waits on it
        assert not _exited(r.pid)
        assert r.finish()[0] == 0  # stopped by us: no failure
        assert r.finish()[0] == 0  # and again: nothing left to do
    finally:
        os.close(fd)
    assert not _children()


@needs_dd
def test_a_read_error_is_dds_exit_status_and_message(tmp_path):
    """/proc/self/mem is a regular file whose read at offset 0 fails (EIO)."""
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    r = reader.spawn(fd)
    try:
        assert _read_all(r) == b""
        code, err = r.finish()
    finally:
        os.close(fd)
    assert code == 1
    assert b"dd: error reading" in err
    assert not _children()


@needs_dd
def test_the_reader_works_when_ct_tune_starts_with_stdio_closed(tmp_path):
    """Descriptors 0-2 free: the table, the pipes and dd's ends must not land on them."""
    path, data = _table(tmp_path, 2 * reader.PIPE_BYTES)
    out = tmp_path / "copy"
    script = ("import os, sys\nfor fd in (0, 1, 2): os.close(fd)\n"
              "from ct_tune import reader\n"
              "assert reader.start_early(sys.argv[1])\n"
              "fd, r = reader.take_early(sys.argv[1])\n"
              "with r.stream() as s: data = s.read()\n"
              "code, err = r.finish()\n"
              "open(sys.argv[2], 'wb').write(data + str(code).encode())\n")
    subprocess.run([sys.executable, "-c", script, path, str(out)], cwd=ROOT, check=True,
                   timeout=60)
    assert out.read_bytes() == data + b"0"


def test_without_dd_nothing_is_started(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "READER", "ct-tune-test-no-such-reader")
    path, _ = _table(tmp_path, 1000)
    fd = os.open(path, os.O_RDONLY)
    before = set(os.listdir("/proc/self/fd"))
    try:
        assert reader.spawn(fd) is None
        assert set(os.listdir("/proc/self/fd")) == before  # no pipe left open
        assert os.read(fd, 10)  # and the caller's descriptor still is
    finally:
        os.close(fd)
    assert not _children()


def test_the_manual_states_the_read_ahead_bound():
    text = " ".join((ROOT / "man" / "ct-tune.8").read_text().split())
    assert f"at most {reader.PREFETCH_BYTES >> 20} MiB of the dump is read ahead" in text


# --- conntrack -L through the same reader ---------------------------------------------

def _on_path(tmp_path, monkeypatch, name: str, script: str) -> None:
    """A stand-in for the command `name` running `script` (sh), first on PATH."""
    bindir = tmp_path / f"{name}-bin"
    bindir.mkdir()
    exe = bindir / name
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def _conntrack(tmp_path, monkeypatch, script: str) -> Roots:
    """A conntrack(8) stand-in running `script` first on PATH, and a tree without
    /proc/net/nf_conntrack."""
    _on_path(tmp_path, monkeypatch, "conntrack", script)
    (tmp_path / "empty").mkdir()
    return Roots(tmp_path / "empty", tmp_path / "sys")


def test_conntrack_failing_is_a_source_error_with_its_message(tmp_path, monkeypatch):
    roots = _conntrack(tmp_path, monkeypatch,
                       "echo 'conntrack v1.4.7 (conntrack-tools): Operation not permitted' >&2\n"
                       "exit 1\n")
    with pytest.raises(ctsource.SourceError,
                       match=r"conntrack -L: exit 1: conntrack v1\.4\.7 .*Operation not perm"), \
            ctsource.table_blocks(roots, "conntrack") as (_, blocks):
        assert list(blocks) == []
    assert not _children()


def test_conntrack_output_is_read_ahead_and_stopping_early_leaves_nothing(tmp_path,
                                                                         monkeypatch):
    line = ("ipv4     2 udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=53 "
            "[UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=53 dport=1 mark=0 use=1\n")
    (tmp_path / "out.txt").write_text(line * (3 * reader.PIPE_BYTES // len(line)))
    roots = _conntrack(tmp_path, monkeypatch, f"cat '{tmp_path / 'out.txt'}'\n"
                                              f"echo done > '{tmp_path / 'finished'}'\n")
    stats = FlowStats(TIMEOUTS)
    with ctsource.table_blocks(roots, "conntrack") as (source, blocks):
        # before anything reads it, three pipes' worth is printed (read ahead)
        assert _wait(lambda: (tmp_path / "finished").exists()), "conntrack blocked"
        stats.feed_blocks(blocks, limit=10)
    assert source.endswith("conntrack -L (ctnetlink)") and stats.entries == 10
    assert not _children()


def test_conntrack_that_never_exits_is_stopped(tmp_path, monkeypatch):
    roots = _conntrack(tmp_path, monkeypatch, "exec >&- ; exec sleep 60\n")
    monkeypatch.setattr(ctsource, "CONNTRACK_TIMEOUT", 0.3)
    with pytest.raises(ctsource.SourceError, match=r"conntrack -L: no answer in 0\.3 s"), \
            ctsource.table_blocks(roots, "conntrack") as (_, blocks):
        assert list(blocks) == []
    assert not _children()


# --- a dd that refuses ibs= and obs=, and read errors without dd ----------------------

def _tree(tmp_path, data: bytes) -> Roots:
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "nf_conntrack").write_bytes(data)
    return Roots(tmp_path / "proc", tmp_path / "sys")


def test_a_dd_without_ibs_and_obs_leaves_the_table_to_be_read_here(tmp_path, monkeypatch):
    """busybox built without FEATURE_DD_IBS_OBS (some router images) refuses the operands
    and reads nothing: the table is read in this process instead, whole, and no error."""
    _on_path(tmp_path, monkeypatch, "dd",
             "echo \"dd: invalid number 'ibs=65536'\" >&2\nexit 1\n")
    data = kernel_like_table(2000, seed=5).encode()
    roots = _tree(tmp_path, data)
    with ctsource.table_blocks(roots, "procfs") as (_, blocks):
        assert "".join(blocks) == data.decode()
    assert not _children()


def test_a_dd_that_fails_after_reading_is_still_an_error(tmp_path, monkeypatch):
    _on_path(tmp_path, monkeypatch, "dd",
             "head -c 100\necho 'dd: error reading: EIO' >&2\nexit 1\n")
    roots = _tree(tmp_path, kernel_like_table(2000, seed=5).encode())
    with pytest.raises(ctsource.SourceError, match=r"nf_conntrack: cannot read: dd: error "
                                                   r"reading: EIO"), \
            ctsource.table_blocks(roots, "procfs") as (_, blocks):
        list(blocks)
    assert not _children()


def test_a_read_error_without_dd_is_a_source_error(tmp_path, monkeypatch):
    """/proc/self/mem read at offset 0 fails with EIO; read in this process it was an
    OSError past the sampler."""
    monkeypatch.setattr(reader, "READER", "ct-tune-test-no-such-reader")
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "nf_conntrack").symlink_to("/proc/self/mem")
    roots = Roots(tmp_path / "proc", tmp_path / "sys")
    with pytest.raises(ctsource.SourceError, match=r"nf_conntrack: cannot read: "
                                                   r"Input/output error"), \
            ctsource.table_blocks(roots, "procfs") as (_, blocks):
        list(blocks)
