"""Property test: any rollback.json, however hostile, is restored safely or not at all.

Arbitrary JSON, near-valid states with hostile paths, keys, values and types, and
arbitrary bytes are put where rollback reads its state, under a scratch root whose
procfs tree lives inside it.  ct-tune's real entry point (ct_tune.cli.main, with its
exit-code mapping) runs in-process under an alarm.  Whatever the content, rollback and
rollback --dry-run never raise past main, never hang, never write outside the scratch
root (a sentinel directory beside it is compared byte for byte), and either restore the
state exactly (exit 0) or change nothing (exit 3, one line).

Generated text never contains '/': the only absolute or '..' paths are the ones listed
here, which lead to the sentinel, so even a broken ct-tune cannot write elsewhere on
this host while the test runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treesnap import snapshot

from ct_tune import cli

UDP = "net.netfilter.nf_conntrack_udp_timeout"
MAX = "net.netfilter.nf_conntrack_max"
EST = "net.netfilter.nf_conntrack_tcp_timeout_established"
PROC_VALUES = {UDP: "60", MAX: "262144", EST: "21600"}
FRAGMENT = "etc/sysctl.d/99-ct-tune.conf"
OLD_FRAGMENT = "# mine\nnet.netfilter.nf_conntrack_udp_timeout = 60\n"

safe_text = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                    max_size=12)
json_any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | safe_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(safe_text, inner, max_size=3),
    max_leaves=8)

paths = st.sampled_from([
    FRAGMENT, "etc/modprobe.d/ct-tune.conf", "etc/modules-load.d/ct-tune.conf",
    "etc/sysctl.d/50-other.conf", "etc/sysctl.d/.hidden.conf", "etc/sysctl.d/a/b.conf",
    "../sentinel/keep.conf", "etc/sysctl.d/../../../sentinel/keep.conf",
    "{sentinel}/keep.conf", "etc/sysctl.d/", "etc/sysctl.d/99-ct-tune.conf\nx",
    "etc/modprobe.d/../../../sentinel/keep.conf",
]) | safe_text | json_any
keys = st.sampled_from([
    UDP, MAX, EST, "net.nf_conntrack_max", "net.netfilter.nf_conntrack_missing",
    "kernel.core_pattern", "{sentinel}/keep.conf", "net.netfilter.nf_conntrack_../../x",
    "net/netfilter/nf_conntrack_max", "../../../sentinel/keep.conf", UDP + "\n",
]) | safe_text | json_any
values = st.sampled_from(["30", "0", "-1", "120", "0x3c", "060", " 45", "1e3", "", "9" * 30]
                         ) | st.integers() | safe_text | json_any
procfs = st.sampled_from(["{proc}", "{proc}/", "{root}/../root/proc", "{sentinel}", "proc",
                          "{proc}/../missing"]) | json_any
file_entry = st.fixed_dictionaries(
    {"path": paths}, optional={"content": st.none() | safe_text | st.just(OLD_FRAGMENT)
                               | json_any})
live_entry = st.fixed_dictionaries(
    {"key": keys}, optional={"value": values, "path": st.just("{sentinel}/keep.conf")})
near_valid = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 2, 0, True, "1", 1.0, None]), "procfs": procfs,
     "files": st.lists(file_entry, max_size=4) | json_any,
     "live": st.lists(live_entry, max_size=4) | json_any},
    optional={"saved_at": json_any, "backup": json_any, "tool_version": json_any})
valid = st.fixed_dictionaries(
    {"version": st.just(1), "procfs": st.sampled_from(["{proc}", "{root}/../root/proc"]),
     "files": st.lists(st.fixed_dictionaries(
         {"path": st.sampled_from([FRAGMENT, "etc/modprobe.d/ct-tune.conf",
                                   "etc/modules-load.d/ct-tune.conf"]),
          "content": st.none() | st.just(OLD_FRAGMENT) | safe_text}),
         max_size=3, unique_by=lambda f: f["path"]),
     "live": st.lists(st.fixed_dictionaries(
         {"key": st.sampled_from([UDP, MAX, EST]),
          "value": st.integers(0, 10**6).map(str)}), max_size=3, unique_by=lambda v: v["key"])})
state_text = (valid.map(json.dumps) | near_valid.map(json.dumps) | json_any.map(json.dumps)
              | near_valid.map(lambda d: json.dumps(d)[: len(json.dumps(d)) // 2]))
# valid states as a branch of their own as well: inside state_text they were about one
# input in ten, and a run of 150 restored as few as 6 (the check below wants 10)
state_bytes = (valid.map(json.dumps).map(str.encode) | state_text.map(str.encode)
               | st.binary(max_size=64))


#: states restored (exit 0), checked at the end: the property must not hold vacuously
RESTORED: list[bytes] = []


class Hang(Exception):
    pass


def run_main(*args: str) -> tuple[int, str, str]:
    """ct-tune's console entry point, in-process, as `ct-tune ARGS` would run it."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["ct-tune", *args]

    def alarm(*_):
        raise Hang(" ".join(args))

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 3
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def build(top: Path, link_modprobe: bool) -> tuple[Path, Path]:
    """top/root (the --root, with a procfs tree inside) and top/sentinel beside it."""
    root, sentinel = top / "root", top / "sentinel"
    netfilter = root / "proc/sys/net/netfilter"
    netfilter.mkdir(parents=True)
    for key, value in PROC_VALUES.items():
        (root / "proc/sys" / key.replace(".", "/")).write_text(value + "\n")
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / FRAGMENT).write_text("# ct-tune\nnet.netfilter.nf_conntrack_udp_timeout = 60\n")
    (root / "var/lib/ct-tune").mkdir(parents=True)
    (root / "etc/modules-load.d").mkdir()
    (root / "etc/modules-load.d/ct-tune.conf").write_text("nf_conntrack\n")
    sentinel.mkdir()
    (sentinel / "keep.conf").write_text("net.netfilter.nf_conntrack_max = 1\n")
    (sentinel / "sub").mkdir()
    if link_modprobe:  # a link inside the root, leading to the sentinel
        (root / "etc/modprobe.d").symlink_to(sentinel)
    return root, sentinel


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=state_bytes, pending=st.booleans(), link_modprobe=st.booleans())
def test_any_state_file_is_restored_exactly_or_not_at_all(data, pending, link_modprobe):
    top = Path(tempfile.mkdtemp(prefix="ct-tune-props-"))
    try:
        root, sentinel = build(top, link_modprobe)
        data = (data.replace(b"{sentinel}", bytes(sentinel)).replace(b"{proc}",
                bytes(root / "proc")).replace(b"{root}", bytes(root)))
        name = "pending.json" if pending else "rollback.json"
        (root / "var/lib/ct-tune" / name).write_bytes(data)
        whole, outside = snapshot(top), snapshot(sentinel)

        code, _, err = run_main("rollback", "--root", str(root), "--dry-run")
        assert code in (0, 3), (code, err)
        assert snapshot(top) == whole  # a dry run changes nothing, not even a lock file

        code, _, err = run_main("rollback", "--root", str(root))
        assert "internal error" not in err and "Traceback" not in err, err
        assert snapshot(sentinel) == outside
        assert code in (0, 3), (code, err)
        after = snapshot(top, skip=("root/var",))
        if code == 3:
            assert err.count("\n") == 1 and err.startswith("ct-tune: "), err
            assert after == snapshot_without_var(whole)
            return
        # restored: exactly what the state says, and nothing else changed
        doc = json.loads(data)
        if doc["live"]:  # live values are only ever written under the tree in the root
            assert os.path.realpath(doc["procfs"]) == str(root / "proc")
        expected = snapshot_without_var(whole)
        for f in doc["files"]:
            if f["content"] is None:
                expected.pop(f"root/{f['path']}", None)
            else:
                expected[f"root/{f['path']}"] = ("file", f["content"].encode(), 0o644)
        for v in doc["live"]:
            rel = "root/proc/sys/" + v["key"].replace(".", "/")
            expected[rel] = ("file", (v["value"] + "\n").encode(), expected[rel][2])
        assert files_only(after) == files_only(expected)
        RESTORED.append(data)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def snapshot_without_var(snap: dict[str, tuple]) -> dict[str, tuple]:
    return {k: v for k, v in snap.items() if not k.startswith("root/var")}


def files_only(snap: dict[str, tuple]) -> dict[str, tuple]:
    return {k: v for k, v in snap.items() if v[0] != "dir"}


def test_the_property_test_restored_some_states():
    """Runs after the property test (file order): some of its inputs were valid and
    restored, so the property did not hold vacuously."""
    if not RESTORED:
        import pytest
        pytest.skip("the property test did not run in this session")
    assert len(RESTORED) >= 10
