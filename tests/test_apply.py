"""apply against captured hosts the running kernel cannot be (other memory, a full table).

The captured tree's /proc/sys files stand in for the live values (--procfs), and a
scratch --root receives the files.  The real-kernel transaction is tested in
test_realkernel_apply.py.
"""

from __future__ import annotations

import stat
from pathlib import Path

from conftest import run_cli, tree_args

from ct_tune import engine, facts, formulas, fragments, plan, profiles, ruleset

MAX = "net.netfilter.nf_conntrack_max"


def live(roots: facts.Roots, key: str) -> str:
    return (roots.procfs / "sys" / key.replace(".", "/")).read_text().strip()


def test_max_is_only_raised_unless_allow_lower(tree, tmp_path):
    roots = tree("tiny-memory-huge-max")
    root = tmp_path / "root"
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    assert proc.returncode == 0, proc.stderr
    assert ("skipped net.netfilter.nf_conntrack_max (2,000,000 -> 96,768): would lower "
            "nf_conntrack_max: only raised by default; pass --allow-lower") in proc.stdout
    assert live(roots, MAX) == "2000000"
    assert f"\n{MAX} = 2000000\n" in (root / "etc/sysctl.d/99-ct-tune.conf").read_text()

    lower = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample",
                    "--allow-lower")
    assert lower.returncode == 0, lower.stderr
    assert live(roots, MAX) == "96768"
    assert f"\n{MAX} = 96768\n" in (root / "etc/sysctl.d/99-ct-tune.conf").read_text()


def test_buckets_are_sized_for_the_max_that_stays(tree, tmp_path):
    """Without --allow-lower the 2,000,000 max stays: the buckets written must keep its
    chains short, not be sized for the 96,768 max that is never written."""
    roots = tree("tiny-memory-huge-max")
    buckets = "net.netfilter.nf_conntrack_buckets"
    assert live(roots, buckets) == "131072"  # chains of 30 at a full 2,000,000 table
    kept = run_cli("audit", *tree_args(roots), "--no-sample", "--format", "sysctl").stdout
    assert f"\n{MAX} = 2000000\n" in kept
    assert f"\n{buckets} = {formulas.buckets_for_max(2_000_000, 8, 1)}\n" in kept
    lowered = run_cli("audit", *tree_args(roots), "--no-sample", "--format", "sysctl",
                      "--allow-lower").stdout
    assert f"\n{MAX} = 96768\n" in lowered
    assert f"\n{buckets} = 131072\n" in lowered  # already enough for 96,768: only raised


def _plan_for(roots: facts.Roots, count: int, allow_lower: bool) -> plan.Plan:
    host = facts.collect(roots)
    host["sysctl"]["net.netfilter.nf_conntrack_count"]["value"] = count
    prof = profiles.get(profiles.load(), "default")
    return plan.build(engine.evaluate(ruleset.load(), host, prof), host, prof, allow_lower)


def test_max_is_never_lowered_below_the_count_with_headroom(tree):
    roots = tree("tiny-memory-huge-max")
    # 80,000 entries in use, target usage 0.5: nothing below 160,000, even when allowed
    p = _plan_for(roots, 80_000, allow_lower=True)
    assert p.value(MAX) == 2_000_000
    (skip,) = [s for s in p.skips if s.key == MAX]
    assert "below the 80,000 entries in use now with the profile's headroom (160,000)" in (
        skip.reason)
    assert _plan_for(roots, 800, allow_lower=True).value(MAX) == 96_768


def test_unlimited_max_counts_as_lowering():
    f = engine.Finding(rule="conntrack-max", title="t", severity="info", parameter=MAX,
                       current=0, recommended=262144, summary="s", explanation="e",
                       scope="here")
    prof = profiles.get(profiles.load(), "default")
    host = {"sysctl": {"net.netfilter.nf_conntrack_count": {"value": 10}}, "conntrack": {}}
    p = plan.build([f], host, prof)
    assert p.value(MAX) == 0
    assert "from unlimited (0)" in p.skips[0].reason


def test_module_hashsize_and_max_are_persisted_together(tree, tmp_path):
    roots = tree("nearly-full-drops")
    root = tmp_path / "root"
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample")
    assert proc.returncode == 0, proc.stderr
    sysctl = (root / "etc/sysctl.d/99-ct-tune.conf").read_text()
    modprobe = (root / "etc/modprobe.d/ct-tune.conf").read_text()
    load = (root / "etc/modules-load.d/ct-tune.conf").read_text()
    assert "options nf_conntrack hashsize=1048576\n" in modprobe
    assert "sets nf_conntrack_max = 1048576 explicitly" in modprobe
    assert f"\n{MAX} = 1048576\n" in sysctl
    assert fragments.content(load) == ["nf_conntrack"]
    for path in ("etc/sysctl.d/99-ct-tune.conf", "etc/modprobe.d/ct-tune.conf",
                 "etc/modules-load.d/ct-tune.conf"):
        assert stat.S_IMODE((root / path).stat().st_mode) == 0o644
    assert live(roots, MAX) == "1048576"
    assert live(roots, "net.netfilter.nf_conntrack_buckets") == "1048576"


def test_module_options_no_longer_needed_are_removed_and_rolled_back(tree, tmp_path):
    roots = tree("nearly-full-drops")
    root = tmp_path / "root"
    args = ("apply", *tree_args(roots), "--root", str(root), "--no-sample", "--no-live")
    assert run_cli(*args).returncode == 0
    modprobe, load = root / "etc/modprobe.d/ct-tune.conf", root / "etc/modules-load.d/ct-tune.conf"
    before = modprobe.read_text()
    assert "hashsize=1048576" in before
    # max and buckets become read-only here (the host moved them into a container's view):
    # max is no longer pinned, and hashsize= alone would mean max = 8 x hashsize at boot
    for key in ("nf_conntrack_max", "nf_conntrack_buckets"):
        (roots.procfs / "sys/net/netfilter" / key).chmod(0o444)
    (root / "etc/modprobe.d/admin.conf").write_text("options nf_conntrack hashsize=4096\n")
    dry = run_cli(*args, "--dry-run")
    assert f"remove {modprobe}" in dry.stdout
    assert modprobe.read_text() == before  # a dry run changes nothing
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert not modprobe.exists()
    assert load.exists()  # still needed for the timeouts
    assert (root / "etc/modprobe.d/admin.conf").exists()  # not ours: never touched
    assert run_cli("rollback", "--root", str(root), "--procfs", str(roots.procfs)).returncode == 0
    assert modprobe.read_text() == before


def test_a_file_of_the_same_name_not_written_by_ct_tune_is_kept(tree, tmp_path):
    roots = tree("container-netns")  # max read-only: no hashsize= to write
    root = tmp_path / "root"
    mine = root / "etc/modprobe.d/ct-tune.conf"
    mine.parent.mkdir(parents=True)
    mine.write_text("# my own\noptions nf_conntrack hashsize=65536\n")
    proc = run_cli("apply", *tree_args(roots), "--root", str(root), "--no-sample", "--no-live")
    assert proc.returncode == 0, proc.stderr
    assert mine.read_text() == "# my own\noptions nf_conntrack hashsize=65536\n"


def test_audit_format_sysctl_is_the_fragment_apply_writes(tree, tmp_path):
    roots = tree("nearly-full-drops")
    root = tmp_path / "root"
    printed = run_cli("audit", "--format", "sysctl", *tree_args(roots), "--root", str(root),
                      "--no-sample")
    assert printed.returncode == 2, printed.stderr  # audit's status: the table is 96 % full
    assert printed.stdout.startswith("# /etc/sysctl.d/99-ct-tune.conf: nf_conntrack settings")
    assert run_cli("apply", *tree_args(roots), "--root", str(root),
                   "--no-sample").returncode == 0
    written = (root / "etc/sysctl.d/99-ct-tune.conf").read_text()
    assert fragments.content(printed.stdout) == fragments.content(written)
    assert any(line.startswith(MAX) for line in fragments.content(written))


def test_a_later_file_setting_our_key_is_reported(tree, tmp_path):
    roots = tree("nearly-full-drops")
    root = tmp_path / "root"
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/sysctl.conf").write_text("# admin\nnet.netfilter.nf_conntrack_max = 100000\n")
    (root / "etc/sysctl.d/99-sysctl.conf").symlink_to("../sysctl.conf")
    (root / "etc/sysctl.d/10-early.conf").write_text("net.netfilter.nf_conntrack_max = 1\n")
    proc = run_cli("apply", "--dry-run", *tree_args(roots), "--root", str(root), "--no-sample")
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert warnings == [
        "ct-tune: warning: /etc/sysctl.d/99-sysctl.conf:2 sets net.netfilter.nf_conntrack_max"
        " = 100000 and is read after 99-ct-tune.conf at boot: it overrides ct-tune's value"]


def test_bad_fragment_name_is_a_usage_error(tree, tmp_path):
    proc = run_cli("apply", "--dry-run", *tree_args(tree("defaults-16g")), "--root",
                   str(tmp_path), "--name", "../evil")
    assert proc.returncode == 3
    assert "must be a file name ending in .conf" in proc.stderr


def test_read_only_tree_keys_are_reported_not_failed(tree, tmp_path):
    roots = tree("container-netns")
    proc = run_cli("apply", "--dry-run", *tree_args(roots), "--root", str(tmp_path),
                   "--no-sample")
    assert proc.returncode == 0, proc.stderr
    assert "skipped net.netfilter.nf_conntrack_max" in proc.stdout
    assert "must be set on the host" in proc.stdout
    assert not Path(tmp_path / "var").exists()  # a dry run takes no lock, writes nothing


def test_no_live_writes_only_the_files(tree, tmp_path):
    roots = tree("nearly-full-drops")
    root = tmp_path / "root"
    proc = run_cli("apply", "--no-live", *tree_args(roots), "--root", str(root), "--no-sample")
    assert proc.returncode == 0, proc.stderr
    assert "live values" not in proc.stdout
    assert live(roots, MAX) == "262144"
    assert f"\n{MAX} = 1048576\n" in (root / "etc/sysctl.d/99-ct-tune.conf").read_text()
