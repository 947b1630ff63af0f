"""This namespace's TCP sockets in CLOSE_WAIT / FIN_WAIT2 (ct_tune/sockets.py): read from
/proc/net/tcp{,6} under the procfs root, bounded, corrupt input named; carried through
collect, snapshots and capture so a replay tells the same story."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli, tree_args

from ct_tune import capture, safeio, sockets
from ct_tune.facts import Problems, Roots

HEAD4 = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
         "  timeout inode\n")
HEAD6 = ("  sl  local_address                         remote_address                        "
         "st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")


def line4(slot: int, state: str) -> str:
    """A /proc/net/tcp line as tcp4_seq_show() prints it (get_tcp4_sock)."""
    return (f"{slot:4d}: 0100007F:1F90 0100007F:{1024 + slot:04X} {state} 00000000:00000000 "
            f"00:00000000 00000000     0        0 {4000 + slot} 1 0000000000000000 20 4 30 "
            "10 -1\n")


def line6(slot: int, state: str) -> str:
    addr = "0000000000000000FFFF00000100007F"
    return (f"{slot:4d}: {addr}:1F90 {addr}:{2048 + slot:04X} {state} 00000000:00000000 "
            f"00:00000000 00000000     0        0 {9000 + slot} 1 0000000000000000 20 4 30 "
            "10 -1\n")


def _tables(roots: Roots, v4: list[str], v6: list[str] | None) -> None:
    (roots.procfs / "net").mkdir(exist_ok=True)
    roots.proc("net/tcp").write_text(HEAD4 + "".join(v4))
    if v6 is not None:
        roots.proc("net/tcp6").write_text(HEAD6 + "".join(v6))


def _collect(roots: Roots) -> tuple[dict | None, list]:
    problems = Problems()
    return sockets.collect(roots, problems), problems.items


def test_counts_close_wait_and_fin_wait2_over_both_families(tree):
    roots = tree("defaults-16g")
    v4 = [line4(i, s) for i, s in enumerate(["01", "08", "08", "0A", "05", "06", "08"])]
    v6 = [line6(i, s) for i, s in enumerate(["08", "01", "05", "05"])]
    _tables(roots, v4, v6)
    got, problems = _collect(roots)
    assert problems == []
    assert got == {"close_wait": 4, "fin_wait2": 3,
                   "sources": [str(roots.proc("net/tcp")), str(roots.proc("net/tcp6"))]}


def test_a_host_without_ipv6_counts_ipv4_and_no_files_means_unknown(tree):
    roots = tree("defaults-16g")
    assert _collect(roots) == (None, [])  # an old capture: no net/tcp at all
    _tables(roots, [line4(0, "08")], None)
    got, _ = _collect(roots)
    assert (got["close_wait"], got["sources"]) == (1, [str(roots.proc("net/tcp"))])


def test_lines_split_across_read_blocks_are_counted_once(tree, monkeypatch):
    roots = tree("defaults-16g")
    _tables(roots, [line4(i, "08" if i % 3 else "01") for i in range(500)], [])
    real = safeio.fd_blocks
    monkeypatch.setattr(safeio, "fd_blocks",
                        lambda fd, path, bound, block=0: real(fd, path, bound, block=97))
    got, _ = _collect(roots)
    assert got["close_wait"] == sum(1 for i in range(500) if i % 3)


@pytest.mark.parametrize(("text", "problem"), [
    (HEAD4 + line4(0, "08") + "   1: garbage here\n",
     "line 3: not a socket line: '1: garbage here'"),
    (HEAD4 + line4(0, "08")[:30] + "\n", "line 2: not a socket line"),
    ("not a header\n" + line4(0, "08"), "line 1: not the header of a socket table"),
])
def test_a_corrupt_table_is_a_problem_naming_the_line_not_a_partial_count(tree, text, problem):
    roots = tree("defaults-16g")
    _tables(roots, [], [line6(0, "08")])
    roots.proc("net/tcp").write_text(text)
    got, problems = _collect(roots)
    assert got is None
    assert problems[0]["path"] == str(roots.proc("net/tcp"))
    assert problems[0]["problem"].startswith(problem)
    assert problems[0]["facts"] == [["sockets"]]


def test_a_fifo_or_a_table_past_the_bound_is_refused(tree, monkeypatch):
    roots = tree("defaults-16g")
    _tables(roots, [line4(i, "08") for i in range(50)], None)
    monkeypatch.setattr(safeio, "SOCKET_TABLE", safeio.Bound(1000, "a socket table"))
    got, problems = _collect(roots)
    assert got is None and "larger than 1000 bytes, the limit for a socket table" in (
        problems[0]["problem"])
    monkeypatch.undo()
    roots.proc("net/tcp").unlink()
    os.mkfifo(roots.proc("net/tcp"))
    got, problems = _collect(roots)  # returns at once: a FIFO is never opened for reading
    assert got is None and problems[0]["problem"] == "not a regular file (FIFO)"


def test_audit_reports_the_count_in_json_and_a_corrupt_table_makes_the_finding_unknown(tree):
    roots = tree("defaults-16g")
    flows = "".join(
        f"ipv4     2 tcp      6 {i % 60} CLOSE_WAIT src=10.1.{i // 250}.{i % 250} "
        f"dst=10.2.0.2 sport={1024 + i} dport=8080 src=10.2.0.2 dst=10.1.{i // 250}.{i % 250} "
        f"sport=8080 dport={1024 + i} [ASSURED] mark=0 zone=0 use=2\n" for i in range(30000))
    roots.proc("net/nf_conntrack").write_text(flows)
    roots.proc("sys/net/netfilter/nf_conntrack_count").write_text("30000\n")
    _tables(roots, [line4(0, "01"), line4(1, "05")], [])
    report = json.loads(run_cli("audit", "--format", "json", *tree_args(roots)).stdout)
    assert report["facts"]["sockets"]["close_wait"] == 0
    cw = next(f for f in report["findings"] if f["rule"] == "close-wait-dominance")
    assert cw["evidence"]["elsewhere"] is True and cw["evidence"]["fin_wait2"] == 1
    assert "only 0 sockets here are in CLOSE_WAIT: forwarded or NATed flows" in cw["summary"]

    roots.proc("net/tcp6").write_text(HEAD6 + "junk\n")
    proc = run_cli("audit", "--format", "json", *tree_args(roots))
    assert f"ct-tune: {roots.proc('net/tcp6')}: line 2: not a socket line: 'junk'" in (
        proc.stderr)
    report = json.loads(proc.stdout)
    assert report["facts"]["sockets"] is None
    cw = next(f for f in report["findings"] if f["rule"] == "close-wait-dominance")
    assert cw["severity"] == "unknown"
    assert proc.returncode == 3


def test_collect_snapshot_carries_the_counts_and_replays(tree, tmp_path):
    roots = tree("defaults-16g")
    _tables(roots, [line4(0, "08"), line4(1, "08")], [line6(0, "05")])
    roots.proc("net/nf_conntrack").write_text("")
    snap = tmp_path / "host.json"
    assert run_cli("collect", "-o", str(snap), *tree_args(roots)).returncode == 0
    data = json.loads(snap.read_text())
    assert {k: data["sockets"][k] for k in ("close_wait", "fin_wait2")} == {
        "close_wait": 2, "fin_wait2": 1}
    assert run_cli("audit", "--facts", str(snap), "--format", "json").returncode in (0, 1)
    data["sockets"]["close_wait"] = "many"
    snap.write_text(json.dumps(data))
    proc = run_cli("audit", "--facts", str(snap))
    assert proc.returncode == 3
    assert "sockets.close_wait: expected integer" in proc.stderr


def test_capture_keeps_the_header_and_the_counted_states_only(tree, tmp_path):
    roots = tree("defaults-16g")
    v4 = [line4(i, s) for i, s in enumerate(["01"] * 40 + ["08", "05", "0A", "08"])]
    _tables(roots, v4, [line6(0, "01"), line6(1, "08")])
    out = tmp_path / "cap"
    capture.capture(roots, out, table=False)
    kept = (out / "proc/net/tcp").read_text().splitlines()
    assert kept[0] == HEAD4.rstrip("\n")
    assert [ln.split()[3] for ln in kept[1:]] == ["08", "05", "08"]
    replay, _ = _collect(Roots(out / "proc", out / "sys"))
    live, _ = _collect(roots)
    assert {k: replay[k] for k in ("close_wait", "fin_wait2")} == {
        k: live[k] for k in ("close_wait", "fin_wait2")} == {"close_wait": 3, "fin_wait2": 1}
