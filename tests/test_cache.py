"""The compiled-expression cache: used only from a safe directory, never changes a result.

The end-to-end tests run the real CLI on a captured host with a cache directory of their
own, and plant entries the way an attacker or a crash would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, tree_args
from jinja2 import FileSystemBytecodeCache

from ct_tune import cache, expr, ruleset

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mount)")


def test_directory_choice():
    assert cache.directory({}, euid=0) == Path("/var/cache/ct-tune")
    assert cache.directory({"HOME": "/home/a"}, euid=1000) == Path("/home/a/.cache/ct-tune")
    assert cache.directory({"HOME": "/home/a", "XDG_CACHE_HOME": "/xdg"},
                           euid=1000) == Path("/xdg/ct-tune")
    # a relative XDG_CACHE_HOME is ignored, as the XDG spec says
    assert cache.directory({"HOME": "/home/a", "XDG_CACHE_HOME": "rel"},
                           euid=1000) == Path("/home/a/.cache/ct-tune")
    assert cache.directory({}, euid=1000) is None
    assert cache.directory({cache.ENV_VAR: "/c"}, euid=0) == Path("/c")
    assert cache.directory({cache.ENV_VAR: "off"}, euid=0) is None
    assert cache.directory({cache.ENV_VAR: ""}, euid=0) is None


def test_safe_directory_checks(tmp_path):
    d = tmp_path / "c"
    d.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    assert cache.is_safe(d)
    os.chmod(d, 0o770)
    assert not cache.is_safe(d)  # group-writable
    os.chmod(d, 0o700)
    (tmp_path / "link").symlink_to(d)
    assert not cache.is_safe(tmp_path / "link")
    (tmp_path / "file").write_text("")
    assert not cache.is_safe(tmp_path / "file")
    assert not cache.is_safe(tmp_path / "missing")
    os.chmod(tmp_path, 0o777)  # anybody could rename c away and put their own there
    assert not cache.is_safe(d)
    os.chmod(tmp_path, 0o1777)  # ... unless sticky, like /tmp
    assert cache.is_safe(d)


@ROOT_ONLY
def test_directory_owned_by_someone_else_is_unsafe(tmp_path):
    d = tmp_path / "c"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    assert not cache.is_safe(d)
    assert cache.is_safe(d, euid=65534)


def _audit(roots, cache_dir: Path | str) -> dict:
    proc = run_cli("audit", "--format", "json", *tree_args(roots),
                   env={cache.ENV_VAR: str(cache_dir)})
    assert proc.returncode in (0, 1, 2) and proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)["findings"]


@pytest.fixture
def host(tree):
    return tree("nearly-full-drops")


@pytest.fixture
def uncached(host):
    return _audit(host, "off")


def test_cold_and_warm_cache_give_the_same_findings(host, uncached, tmp_path):
    d = tmp_path / "cache"
    assert _audit(host, d) == uncached
    entries = sorted(d.glob("expr-*.cache"))
    assert len(entries) > 50  # every distinct expression and template of the rules
    assert oct(d.stat().st_mode & 0o777) == "0o700"
    assert {oct(e.stat().st_mode & 0o777) for e in entries} == {"0o600"}
    stamps = {e: e.stat().st_mtime_ns for e in entries}
    assert _audit(host, d) == uncached
    assert {e: e.stat().st_mtime_ns for e in sorted(d.glob("expr-*.cache"))} == stamps


def _poison(directory: Path) -> None:
    """Store, under the keys of one rule's summaries, code that renders something else."""
    rule = next(r for r in ruleset.load() if r.id == "table-drops")
    bcc = FileSystemBytecodeCache(str(directory), pattern="expr-%s.cache")
    for case in rule.cases:
        source = case.summary.source
        bucket = bcc.get_bucket(expr._ENV, expr.cache_name("text", source), None, source)
        bucket.code = expr._ENV.compile("POISONED")
        bcc.set_bucket(bucket)


def test_entry_planted_where_others_can_write_is_never_run(host, uncached, tmp_path):
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    _poison(d)
    # control: from a safe directory the entry is used, so the test can see a poisoning
    assert "POISONED" in {f["summary"] for f in _audit(host, d)}
    os.chmod(d, 0o777)
    assert _audit(host, d) == uncached
    os.chmod(d, 0o700)
    os.chmod(tmp_path, 0o777)  # a writable, non-sticky parent is as bad
    assert _audit(host, d) == uncached


def test_corrupt_or_truncated_entries_are_compiled_again(host, uncached, tmp_path):
    d = tmp_path / "cache"
    _audit(host, d)
    entries = sorted(d.glob("expr-*.cache"))
    entries[0].write_bytes(b"")
    entries[1].write_bytes(entries[1].read_bytes()[:20])  # inside the pickled checksum
    entries[2].write_bytes(entries[2].read_bytes()[:-40])  # inside the marshalled code
    entries[3].write_bytes(os.urandom(300))
    assert _audit(host, d) == uncached
    # rewritten whole: a third run reads them back
    assert all(e.stat().st_size > 100 for e in entries[:4])
    assert _audit(host, d) == uncached


def test_unusable_cache_location_is_not_an_error(host, uncached, tmp_path):
    (tmp_path / "file").write_text("")
    assert _audit(host, tmp_path / "file" / "cache") == uncached
    assert _audit(host, "off") == uncached


@ROOT_ONLY
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_read_only_cache_is_not_an_error(host, uncached, tmp_path):
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    # a read-only bind mount in a private mount namespace: even root cannot write there
    script = f'mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec "$@"'
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", "env", f"PYTHONPATH={ROOT}",
         sys.executable, "-m", "ct_tune", "audit", "--format", "json", *tree_args(host)],
        capture_output=True, text=True, env={**os.environ, cache.ENV_VAR: str(d)},
        check=False, timeout=120)
    assert proc.returncode in (0, 1, 2) and proc.stderr == "", proc.stderr
    assert json.loads(proc.stdout)["findings"] == uncached
    assert list(d.iterdir()) == []


def _summary_codes(bcc) -> list:
    """What bcc loads for the table-drops summaries (None: not in the cache)."""
    from jinja2.bccache import Bucket

    rule = next(r for r in ruleset.load() if r.id == "table-drops")
    codes = []
    for case in rule.cases:
        source = case.summary.source
        bucket = Bucket(expr._ENV, bcc.get_cache_key(expr.cache_name("text", source)),
                        bcc.get_source_checksum(source))
        bcc.load_bytecode(bucket)
        codes.append(bucket.code)
    return codes


def _poisoned(code) -> bool:
    """Whether compiled code (or any code nested in it) carries the planted text."""
    return any(c == "POISONED" or (hasattr(c, "co_consts") and _poisoned(c))
               for c in code.co_consts)


@pytest.fixture
def fresh_cache(monkeypatch):
    """bytecode_cache() opened anew for a directory of the test's choosing."""
    def use(d: Path):
        monkeypatch.setenv(cache.ENV_VAR, str(d))
        cache.bytecode_cache.cache_clear()
        return cache.bytecode_cache()
    yield use
    cache.bytecode_cache.cache_clear()


def test_directory_swapped_after_the_check_is_not_read(host, tmp_path, fresh_cache):
    d = tmp_path / "cache"
    _audit(host, d)  # the real entries
    bcc = fresh_cache(d)
    assert bcc is not None
    # after the check and before any entry is read, the directory is replaced by one
    # holding other code under the same names (what a flipped symlink on the way does)
    d.rename(tmp_path / "checked")
    d.mkdir(mode=0o700)
    _poison(d)
    codes = _summary_codes(bcc)
    assert all(c is not None for c in codes)  # read from the directory that was checked
    assert not any(_poisoned(c) for c in codes)
    # control: opened anew, the planted directory is the cache, and the test sees it
    assert any(_poisoned(c) for c in _summary_codes(fresh_cache(d)))


def test_entries_that_are_symlinks_or_writable_by_others_are_not_read(
        host, uncached, tmp_path):
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    _poison(d)
    planted = sorted(d.glob("expr-*.cache"))
    for e in planted:
        os.chmod(e, 0o666)
    assert _audit(host, d) == uncached
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _poison(elsewhere)
    before = {e.name: e.read_bytes() for e in elsewhere.iterdir()}
    for e in planted:
        e.unlink()
        e.symlink_to(elsewhere / e.name)
    assert _audit(host, d) == uncached
    # compiled again and written in place of the link, never through it
    assert not any(e.is_symlink() for e in planted)
    assert {e.name: e.read_bytes() for e in elsewhere.iterdir()} == before


@ROOT_ONLY
def test_symlink_owned_by_another_user_on_the_way_is_unsafe(host, uncached, tmp_path):
    # /tmp-like: root's sticky directory where user nobody owns a symlink to a directory
    # of root's; nobody can point it elsewhere at any moment, so the cache is not used
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    real = tmp_path / "real"
    (real / "cache").mkdir(parents=True, mode=0o700)
    _poison(real / "cache")
    link = sticky / "link"
    link.symlink_to(real)
    os.lchown(link, 65534, 65534)
    assert not cache.is_safe(link / "cache")
    assert _audit(host, link / "cache") == uncached
    # control: the same symlink owned by root is followed, and the planted entry is used
    os.lchown(link, 0, 0)
    assert cache.is_safe(link / "cache")
    assert "POISONED" in {f["summary"] for f in _audit(host, link / "cache")}
