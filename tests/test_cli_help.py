"""Finding one's way: man pages after `pip install .`, shell completion, sorted rule lists,
"did you mean" for a mistyped rule or profile, `profiles show`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from conftest import ROOT, run_cli

from ct_tune import suggest


def _complete(words: str, env_extra: dict | None = None) -> list[str]:
    """What bash completion offers for the last of `words` (click's bash_complete)."""
    parts = words.split(" ")
    env = {"COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1),
           "_CT_TUNE_COMPLETE": "bash_complete", **(env_extra or {})}
    proc = run_cli(env=env)
    assert proc.returncode == 0, proc.stderr
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if "," in line]


def test_completion_script_is_generated_and_bash_loads_it():
    proc = run_cli(env={"_CT_TUNE_COMPLETE": "bash_source"})
    assert proc.returncode == 0, proc.stderr
    assert "_ct_tune_completion()" in proc.stdout
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash to load the completion script into")
    loaded = subprocess.run([bash, "-c", 'eval "$1"; complete -p ct-tune', "_", proc.stdout],
                            capture_output=True, text=True, timeout=60, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert "-F _ct_tune_completion ct-tune" in loaded.stdout
    for shell in ("zsh", "fish"):
        other = run_cli(env={"_CT_TUNE_COMPLETE": f"{shell}_source"})
        assert other.returncode == 0 and "ct-tune" in other.stdout, shell


def test_completion_offers_commands_options_rule_ids_and_profiles():
    assert _complete("ct-tune rules sh") == ["show"]
    assert _complete("ct-tune audit --col") == ["--color"]
    assert _complete("ct-tune audit --color ") == ["auto", "always", "never"]
    assert _complete("ct-tune rules show conntrack-m") == ["conntrack-max"]
    profiles = _complete("ct-tune audit --profile ")
    assert {"default", "k8s-node", "nat-gateway"} <= set(profiles)
    assert _complete("ct-tune profiles show k8") == ["k8s-node"]


def test_rules_list_is_sorted_by_id():
    proc = run_cli("rules", "list")
    assert proc.returncode == 0, proc.stderr
    ids = [line.split()[0] for line in proc.stdout.splitlines()[2:]]
    assert len(ids) > 20 and ids == sorted(ids)


@pytest.mark.parametrize(("args", "suggestion"), [
    (["rules", "show", "conntrack_max"], "(did you mean 'conntrack-max'?)"),
    (["rules", "show", "CONNTRACK-MAX"], "(did you mean 'conntrack-max'?)"),
    (["rules", "show", "tcp-timeout-establshed"], "'tcp-timeout-established'"),
    (["profiles", "show", "k8s"], "(did you mean 'k8s-node'?)"),
    (["audit", "--no-sample", "--profile", "k8s_node"], "(did you mean 'k8s-node'?)"),
    (["check", "--profile", "nat-gatway"], "(did you mean 'nat-gateway'?)"),
])
def test_did_you_mean(args, suggestion):
    proc = run_cli(*args)
    assert proc.returncode == 3
    text = proc.stderr + proc.stdout
    assert suggestion in text, text
    assert "Traceback" not in text


def test_no_suggestion_for_a_name_nothing_like_any():
    proc = run_cli("rules", "show", "zzzz")
    assert proc.returncode == 3
    assert proc.stderr.strip() == "ct-tune: no rule with id 'zzzz' (see 'ct-tune rules list')"
    assert suggest.did_you_mean("zzzz", ["conntrack-max"]) == ""


def test_profiles_show_merges_extends_and_formats_durations():
    proc = run_cli("profiles", "show", "k8s-node")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("profile k8s-node: Kubernetes node")
    # k8s-node extends default: a target only default sets shows too
    default = tomllib.loads((ROOT / "rules/profiles/default.toml").read_text())
    only_default = sorted(set(default.get("targets", {})) - set(
        tomllib.loads((ROOT / "rules/profiles/k8s-node.toml").read_text()).get("targets", {})))
    assert only_default and all(f"  {k} = " in text for k in only_default)
    assert "  max_per_bucket = 4  (" in text
    assert "  nf_conntrack_tcp_timeout_established = 86,400 s (1 d)\n" in text
    assert re.search(r"  target_usage = \d+ %", text)
    assert "      source: kubernetes pkg/proxy/apis/config/v1alpha1/defaults.go" in text


def test_apply_skip_lines_use_the_duration_format():
    from ct_tune import render

    class Skip:
        key = "net.netfilter.nf_conntrack_udp_timeout"
        current, recommended, reason = 30, 60, "kube-proxy rewrites it"

    class Changes:
        files, live, unchanged_files, unchanged_live, empty = [], [], [], [], True

    text = render.changes(Changes(), [Skip()], "/", dry_run=True)
    assert "skipped net.netfilter.nf_conntrack_udp_timeout (30 s -> 60 s (1 min))" in text


# -- man pages ----------------------------------------------------------------------------


def test_man_pages_are_data_files_of_the_package():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = conf["tool"]["setuptools"]["data-files"]
    assert data["share/man/man8"] == ["man/ct-tune.8"]
    assert sorted(data["share/man/man5"]) == ["man/ct-tune-json.5", "man/ct-tune-rules.5"]
    for files in data.values():
        assert all((ROOT / f).is_file() for f in files)


def test_pip_install_puts_man_pages_where_man_finds_them(tmp_path):
    """One real `pip install .` (from a copy of the tree) into a new venv: the pages land
    in <venv>/share/man, and man-db, which maps <dir>/bin on PATH to <dir>/share/man,
    finds them there without MANPATH."""
    src = tmp_path / "src"
    for name in ("ct_tune", "rules", "man", "pyproject.toml", "README.md"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                        if (ROOT / name).is_dir() else {}))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
                          "install", "-q", "--no-deps", str(src)],
                         capture_output=True, text=True, timeout=600, check=False)
    if pip.returncode != 0 and "no such option: --python" in pip.stderr:
        pytest.skip("pip older than 22.3 (no --python)")
    assert pip.returncode == 0, pip.stderr
    man8 = venv / "share/man/man8/ct-tune.8"
    assert man8.read_bytes() == (ROOT / "man/ct-tune.8").read_bytes()
    for page in ("ct-tune-rules.5", "ct-tune-json.5"):
        assert (venv / "share/man/man5" / page).is_file()
    man = shutil.which("man")
    if man is None:
        pytest.skip("man-db not installed: the pages are in place, man(1) not checked")
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    found = subprocess.run([man, "-w", "ct-tune", "ct-tune-json"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=60, check=False)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [str(man8), str(venv / "share/man/man5/ct-tune-json.5")]
