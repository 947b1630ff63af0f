"""ctsource.table_blocks: the table read in blocks (through dd(1) when there is one) is
exactly the text a text-mode file gives, and stopping early leaves nothing behind."""

from __future__ import annotations

import shutil

import psutil
import pytest
from test_flowblocks import TIMEOUTS, kernel_like_table

from ct_tune import ctsource, reader
from ct_tune.errors import InputError
from ct_tune.facts import Roots
from ct_tune.flows import FlowStats


def write_table(tmp_path, data: bytes) -> Roots:
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "nf_conntrack").write_bytes(data)
    return Roots(tmp_path / "proc", tmp_path / "sys")


ODD = (b"ipv4 2 udp 17 5 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 mark=0 use=1\r\n"
       b"bad \xff\xfe line\rnext\r\n\xe2\x82\n")


@pytest.mark.parametrize("with_dd", [True, False])
def test_table_blocks_give_the_text_mode_text(tmp_path, monkeypatch, with_dd):
    if not with_dd:  # no reader on PATH: the file is read in this process
        monkeypatch.setattr(reader, "READER", "ct-tune-test-no-such-reader")
    elif shutil.which("dd") is None:
        pytest.skip("no dd(1)")
    monkeypatch.setattr(ctsource, "BLOCK_CHARS", 50)
    data = kernel_like_table(300, seed=3).encode() + ODD * 3 + b"tail without newline"
    roots = write_table(tmp_path, data)
    with ctsource.table_blocks(roots, "procfs") as (source, blocks):
        got = list(blocks)
    assert source.endswith("net/nf_conntrack")
    with open(roots.proc("net/nf_conntrack"), encoding="utf-8", errors="replace") as f:
        assert "".join(got) == f.read()
    assert all(b.endswith("\n") for b in got[:-1]) and got[-1] == "tail without newline"


def test_stopping_early_closes_the_reader(tmp_path):
    roots = write_table(tmp_path, kernel_like_table(20000, seed=4).encode())
    stats = FlowStats(TIMEOUTS)
    with ctsource.table_blocks(roots, "procfs") as (_, blocks):
        stats.feed_blocks(blocks, limit=10)
    assert stats.entries == 10
    assert not psutil.Process().children()  # the reader was waited for


def test_missing_table_is_a_source_error(tmp_path):
    (tmp_path / "proc" / "net").mkdir(parents=True)
    with pytest.raises(ctsource.SourceError, match="cannot read"), \
            ctsource.table_blocks(Roots(tmp_path / "proc", tmp_path / "sys"), "procfs"):
        pass


def test_table_that_is_a_directory_is_bad_input(tmp_path):
    (tmp_path / "proc" / "net" / "nf_conntrack").mkdir(parents=True)
    with pytest.raises(InputError, match=r"nf_conntrack: not a regular file \(directory\)"), \
            ctsource.table_blocks(Roots(tmp_path / "proc", tmp_path / "sys"), "procfs"):
        pass
