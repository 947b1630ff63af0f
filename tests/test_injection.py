"""Rule, profile and host text can never add a line to the files ct-tune writes, and a
broken rule or profile file is one clean line per file at fault (exit 3), never an
internal error or a hang.

Every vector runs as a user would: `audit --format sysctl` and `apply --root SCRATCH
--no-live` (unprivileged-safe: a scratch root, no live writes) on a captured tree with a
crafted --rules-dir.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from conftest import run_cli, tree_args
from hypothesis import given
from hypothesis import strategies as st
from tomltext import toml_str

from ct_tune import cli, fragments, plan
from ct_tune.errors import CtTuneError
from ct_tune.oneline import comment, one_line

#: the only lines (other than blanks and comments) ct-tune may write or print
ALLOWED = re.compile(r"(net\.netfilter\.nf_conntrack_[a-z0-9_]+|net\.nf_conntrack_max) = -?\d+"
                     r"|options nf_conntrack hashsize=\d+|nf_conntrack")
PAYLOAD = "kernel.core_pattern = |/tmp/x"
#: every line break str.splitlines() honours, each followed by a sysctl line
BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
          "\u2029"]
INJECT = "".join(f"ok{b}{PAYLOAD}" for b in BREAKS)


def rule(recommended: str = "45", summary: str = "s", sources: str = "src",
         explanation: str = "e", title: str = "t", rid: str = "inject",
         parameter: str = "net.netfilter.nf_conntrack_udp_timeout") -> str:
    return (f"id = {toml_str(rid)}\ntitle = {toml_str(title)}\n"
            f"parameter = {toml_str(parameter)}\nrecommended = {toml_str(recommended)}\n"
            f"sources = [{toml_str(sources)}]\nexplanation = {toml_str(explanation)}\n"
            f"[[severity]]\nlevel = \"info\"\nsummary = {toml_str(summary)}\n")


def profile(name: str = "site", reason: str = "r", source: str = "s",
            description: str = "d") -> str:
    return (f"name = {toml_str(name)}\nextends = \"default\"\n"
            f"description = {toml_str(description)}\n"
            "[timeouts.nf_conntrack_udp_timeout]\nvalue = 45\n"
            f"reason = {toml_str(reason)}\nsource = {toml_str(source)}\n")


def run_main(*args: str) -> tuple[int, str, str]:
    """ct-tune's console entry point in this process (same output and status as the
    command, without a Python start-up per case): (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch.object(sys, "argv", ["ct-tune", *args]):
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0
    return code, out.getvalue(), err.getvalue()


def run_fast(*args: str) -> subprocess.CompletedProcess:
    """run_main's result shaped like run_cli's."""
    code, out, err = run_main(*args)
    return subprocess.CompletedProcess(["ct-tune", *args], code, out, err)


def assert_only_ct_lines(text: str, where: str) -> None:
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            assert ALLOWED.fullmatch(line), f"{where}: injected line {line!r}"


def check_run(args: list[str], tmp_path: Path, bad_file: Path | None = None) -> None:
    """audit --format sysctl and apply --root SCRATCH --no-live: every line printed or
    written is a ct-tune line, or the run is a clean exit 3 naming the file at fault."""
    audit = run_main("audit", "--format", "sysctl", "--no-sample", *args)
    scratch = tmp_path / f"scratch{len(list(tmp_path.glob('scratch*')))}"
    scratch.mkdir()
    apply = run_main("apply", "--root", str(scratch), "--no-live", "--no-sample", *args)
    for (code, _, err), what in ((audit, "audit"), (apply, "apply")):
        assert "Traceback" not in err and "internal error" not in err, err
        if code == 3:
            assert bad_file is not None, f"{what}: {err}"
            assert err.startswith(f"ct-tune: {bad_file}: "), err
        else:
            assert code in (0, 1, 2), f"{what}: {code} {err}"
    assert_only_ct_lines(audit[1], "audit --format sysctl")
    written = [p for p in scratch.rglob("*") if p.is_file() and "var/lib" not in str(p)]
    for path in written:
        assert_only_ct_lines(path.read_text(), str(path))
    if audit[0] != 3:
        assert written, apply
        # the injected text is still there, escaped inside a comment
        assert PAYLOAD not in audit[1] or "\\n" in audit[1]


@pytest.mark.parametrize("field", ["recommended", "summary", "sources", "explanation",
                                   "title"])
def test_rule_text_never_becomes_a_line(tmp_path, tree, field):
    d = tmp_path / "rules"
    d.mkdir()
    value = "'45" + INJECT + "'" if field == "recommended" else INJECT
    path = d / "inject.toml"
    path.write_text(rule(**{field: value}))
    check_run(["--no-builtin-rules", "--rules-dir", str(d), *tree_args(tree("defaults-16g"))],
              tmp_path, bad_file=path)


def test_recommended_text_is_an_error_naming_the_rule(tmp_path, tree):
    d = tmp_path / "rules"
    d.mkdir()
    path = d / "inject.toml"
    path.write_text(rule(recommended="'45\\n" + PAYLOAD + "'"))
    proc = run_cli("audit", "--format", "sysctl", "--no-builtin-rules", "--rules-dir", str(d),
                   *tree_args(tree("defaults-16g")))
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"ct-tune: {path}: inject: recommended value for "
                                  "net.netfilter.nf_conntrack_udp_timeout: ")
    assert "is not an integer" in proc.stderr


@pytest.mark.parametrize("value", ["2147483648", "-5", "0", "45.5", "true", "10**100"])
def test_recommended_value_outside_the_keys_type_is_refused(tmp_path, tree, value):
    d = tmp_path / "rules"
    d.mkdir()
    path = d / "inject.toml"
    path.write_text(rule(recommended=value))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = run_fast("apply", "--root", str(scratch), "--no-live", "--no-builtin-rules",
                   "--rules-dir", str(d), *tree_args(tree("defaults-16g")))
    assert proc.returncode == 3, proc.stdout
    assert proc.stderr.startswith(f"ct-tune: {path}: inject: recommended value for ")
    assert not (scratch / "etc").exists()


@pytest.mark.parametrize("field", ["reason", "source", "description"])
def test_profile_text_never_becomes_a_line(tmp_path, tree, field):
    d = tmp_path / "rules"
    (d / "profiles").mkdir(parents=True)
    path = d / "profiles" / "site.toml"
    path.write_text(profile(**{field: INJECT}))
    check_run(["--rules-dir", str(d), "--profile", "site", *tree_args(tree("defaults-16g"))],
              tmp_path, bad_file=path)


def test_profile_name_with_a_line_break_is_refused(tmp_path, tree):
    d = tmp_path / "rules"
    (d / "profiles").mkdir(parents=True)
    path = d / "profiles" / "site.toml"
    path.write_text(profile(name="site\n" + PAYLOAD))
    proc = run_fast("audit", "--format", "sysctl", "--rules-dir", str(d), "--profile", "site",
                   *tree_args(tree("defaults-16g")))
    assert proc.returncode == 3
    assert proc.stderr == f"ct-tune: {path}: (no name): 'name' is required: letters, " \
        "digits, '.', '_' and '-' (at most 64), e.g. 'k8s-node'\n"


def test_hostname_never_becomes_a_line(tmp_path, tree):
    roots = tree("defaults-16g")
    (roots.procfs / "sys/kernel/hostname").write_text("vm" + INJECT + "\n")
    check_run(["--profile", "nat-gateway", *tree_args(roots)], tmp_path)
    out = run_cli("audit", "--format", "sysctl", "--no-sample", *tree_args(roots)).stdout
    assert "on vm" in out


def test_fragment_name_with_a_line_break_is_refused(tmp_path, tree):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = tree_args(tree("defaults-16g"))
    for cmd in (["audit", "--format", "sysctl"], ["apply", "--root", str(scratch),
                                                 "--no-live"]):
        proc = run_fast(*cmd, "--name", "x\nkernel.sysrq = 1.conf", *args)
        assert proc.returncode == 3
        # fragments.render refuses it; apply's own option check may refuse it first
        assert (proc.stderr.startswith("ct-tune: --name: ")
                and proc.stderr.count("\n") == 1) or "Invalid value for --name" in proc.stderr
        assert "kernel.sysrq" not in proc.stdout
    assert list(scratch.rglob("*.conf")) == []


def test_comment_filter_keeps_every_line_break_on_one_line():
    text = "a" + "".join(f"{b}b" for b in BREAKS) + "\x00\x7f\x9f\tc"
    assert len(one_line(text).splitlines()) == 1
    assert comment(text).startswith("# a\\nb\\rb")
    assert "\\u2028" in one_line(text) and "\\x85" in one_line(text)


def _escaped(ch: str) -> str:
    """The escape oneline promises for one character, written out independently."""
    code = ord(ch)
    if ch in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": " "}[ch]
    if code < 0x20 or 0x7f <= code < 0xa0:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if ch in "\u2028\u2029" else ch


_CONTROLS = st.sampled_from([*(b for b in BREAKS if len(b) == 1), "\x00", "\t", "\x9f"])


@given(st.text(alphabet=st.one_of(st.characters(), _CONTROLS)))
def test_one_line_escapes_each_control_character_and_keeps_the_rest(text):
    assert one_line(text) == "".join(map(_escaped, text))
    assert len(one_line(text).splitlines()) <= 1


def _plan(key: str, value: object, summary: str = "s") -> plan.Plan:
    s = plan.Setting(key, value, 30, "r", "t", summary)
    return plan.Plan((s,), (), None, False, None)


META = fragments.Meta(version="1", profile="default", date="d", hostname="h")


@pytest.mark.parametrize(("key", "value"), [
    ("kernel.core_pattern", 1),
    ("net.netfilter.nf_conntrack_udp_timeout", "45\nkernel.core_pattern = |/tmp/x"),
    ("net.netfilter.nf_conntrack_udp_timeout", 2**40),
    ("net.netfilter.nf_conntrack_udp_timeout\nkernel.core_pattern", 1),
])
def test_render_refuses_a_key_or_value_the_plan_should_never_hold(key, value):
    with pytest.raises(CtTuneError, match="refusing to write"):
        fragments.render(_plan(key, value), META)


def test_render_escapes_every_text_it_prints():
    p = _plan("net.netfilter.nf_conntrack_udp_timeout", 45, summary=INJECT)
    meta = fragments.Meta(version="1" + INJECT, profile="p" + INJECT, date="d" + INJECT,
                          hostname="h" + INJECT)
    for text in fragments.render(p, meta).values():
        assert_only_ct_lines(text, "render")


# -- rule and profile files that are wrong: every one reported, exit 3, one line each --

def test_parameter_naming_another_key_is_refused_at_load(tmp_path):
    d = tmp_path / "rules"
    d.mkdir()
    path = d / "core.toml"
    path.write_text(rule(parameter="kernel.core_pattern", recommended="'|/tmp/x'"))
    proc = run_fast("rules", "list", "--rules-dir", str(d))
    assert proc.returncode == 3
    assert proc.stderr == (f"ct-tune: {path}: inject: 'parameter' must be a conntrack sysctl "
                           "key such as 'net.netfilter.nf_conntrack_max'\n")


def test_recommending_a_key_ct_tune_only_reads_is_refused_at_load(tmp_path):
    d = tmp_path / "rules"
    d.mkdir()
    path = d / "keepalive.toml"
    path.write_text(rule(parameter="net.ipv4.tcp_keepalive_time"))
    proc = run_fast("rules", "list", "--rules-dir", str(d))
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"ct-tune: {path}: inject: 'parameter' "
                                  "'net.ipv4.tcp_keepalive_time' is not a key ct-tune may write")


def test_a_report_only_rule_may_name_a_key_it_reads(tmp_path, tree):
    d = tmp_path / "rules"
    d.mkdir()
    (d / "keepalive.toml").write_text(rule(parameter="net.ipv4.tcp_keepalive_time")
                                      .replace('recommended = "45"\n', ""))
    code, out, err = run_main("audit", "--format", "json", "--no-builtin-rules", "--no-sample",
                              "--rules-dir", str(d), *tree_args(tree("defaults-16g")))
    assert code == 0, err
    assert '"parameter": "net.ipv4.tcp_keepalive_time"' in out


def test_duplicate_ids_in_one_directory_name_both_files(tmp_path):
    d = tmp_path / "rules"
    d.mkdir()
    (d / "a.toml").write_text(rule(rid="same"))
    (d / "b.toml").write_text(rule(rid="same"))
    proc = run_fast("rules", "list", "--rules-dir", str(d))
    assert proc.returncode == 3
    assert proc.stderr == (f"ct-tune: {d / 'b.toml'}: same: duplicate rule id: {d / 'a.toml'} "
                           "in the same directory has it too\n")


def test_duplicate_profile_names_in_one_directory_name_both_files(tmp_path):
    d = tmp_path / "rules"
    (d / "profiles").mkdir(parents=True)
    (d / "profiles" / "a.toml").write_text(profile())
    (d / "profiles" / "b.toml").write_text(profile())
    proc = run_fast("profiles", "list", "--rules-dir", str(d))
    assert proc.returncode == 3
    assert f"{d / 'profiles' / 'b.toml'}: site: duplicate profile name: " \
        f"{d / 'profiles' / 'a.toml'}" in proc.stderr


def test_same_id_in_a_later_directory_still_replaces(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.toml").write_text(rule(rid="same"))
    (b / "x.toml").write_text(rule(rid="same"))
    proc = run_fast("rules", "list", "--no-builtin-rules", "--rules-dir", str(a),
                   "--rules-dir", str(b))
    assert proc.returncode == 0, proc.stderr
    assert str(b / "x.toml") in proc.stdout and str(a / "x.toml") not in proc.stdout


def test_every_bad_rule_and_profile_file_is_reported(tmp_path, tree):
    d = tmp_path / "rules"
    (d / "profiles").mkdir(parents=True)
    bad = [d / f"bad{n}.toml" for n in range(4)]
    bad[0].write_text("id = 'bad0'\ntitle = \n")
    bad[1].write_text(rule(rid="bad1", parameter="kernel.core_pattern"))
    bad[2].write_text(rule(rid="bad2").replace('explanation = "e"', 'explanation = 1e400'))
    bad[3].write_text(rule(rid="bad3", recommended="(" * 400 + "1" + ")" * 400))
    prof = d / "profiles" / "p.toml"
    prof.write_text(profile().replace("value = 45", "value = nan"))
    proc = run_fast("audit", "--rules-dir", str(d), *tree_args(tree("defaults-16g")))
    assert proc.returncode == 3
    lines = proc.stderr.splitlines()
    assert len(lines) == 5, proc.stderr
    assert sorted(line.split(": ")[1] for line in lines) == sorted(map(str, [*bad, prof]))
    assert all(line.startswith("ct-tune: ") for line in lines)


NESTED = "a = " + "[" * 5000 + "]" * 5000 + "\n"


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda t: t.replace('title = "t"', "title = nan"), "title: nan is not a finite number"),
    (lambda t: t.replace('title = "t"', "title = 1e400"), "title: inf is not a finite number"),
    (lambda t: t.replace('title = "t"', "title = 99999999999999999999999"),
     "title: integer out of range"),
    (lambda t: t.replace('title = "t"', "title = " + "9" * 5000), "invalid TOML"),
    (lambda t: NESTED + t, "invalid TOML: arrays or tables nested too deeply"),
    (lambda t: t.replace('recommended = "45"', "recommended = \"'a'*10**10\""),
     "repetition too large"),
    (lambda t: t.replace('recommended = "45"', 'recommended = "range(10**9)|list|length"'),
     "Range too big"),
    (lambda t: t.replace('recommended = "45"', 'recommended = "' + "(" * 3000 + "1"
                         + ")" * 3000 + '"'), "nested too deeply"),
    (lambda t: t.replace('recommended = "45"', 'recommended = "' + "-" * 5000 + '1"'),
     "nested too deeply"),
    (lambda t: t.replace('recommended = "45"', 'recommended = "10**10**10**10"'),
     "power too large"),
    (lambda t: t.replace('recommended = "45"', 'recommended = "' + "9" * 5000 + '"'),
     "Exceeds the limit (4300 digits)"),
    (lambda t: t.replace('summary = "s"', 'summary = "{% for i in range(99999) %}'
                         '{% for j in range(99999) %}{% endfor %}{% endfor %}"'),
     "too much work"),
    (lambda t: t.replace('summary = "s"', 'summary = "{{ \'%999999999d\' % 1 }}"'),
     "format width or precision 999999999 is too large"),
    (lambda t: t.replace('summary = "s"', 'summary = "{{ \'x\'.center(10**9) }}"'),
     "access to attribute 'center' of 'str' object is unsafe"),
    (lambda t: t.replace('summary = "s"', 'summary = "{{ 0.5|pct(999999999) }}"'),
     "pct: digits must be 0 to 20"),
    (lambda t: t.replace('summary = "s"', 'summary = "{{ [' + ", ".join(["'x'*1000000"] * 3)
                         + ']|string }}"'), "input of the string filter too large"),
])
def test_hostile_rule_file_is_one_clean_line(tmp_path, tree, edit, problem):
    d = tmp_path / "rules"
    d.mkdir()
    path = d / "hostile.toml"
    path.write_text(edit(rule(rid="hostile")))
    code, out, err = run_main("audit", "--no-builtin-rules", "--rules-dir", str(d),
                              "--no-sample", *tree_args(tree("defaults-16g")))
    assert code == 3, out
    assert err.count("\n") == 1, err
    assert err.startswith(f"ct-tune: {path}: ")
    assert "internal error" not in err
    assert problem in err


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda t: t + "[targets]\ntarget_usage = nan\n", "targets.target_usage: nan is not a "
     "finite number"),
    (lambda t: t + "[targets]\nmin_max = 1e400\n", "targets.min_max: inf is not a finite"),
    (lambda t: t + "[targets]\nmin_max = 99999999999999999999\n", "integer out of range"),
    (lambda t: t + "[targets]\nmin_max = 9999999999\n", "'min_max' = 9999999999 is outside"),
    (lambda t: t + "[targets]\ntarget_usage = 0\n", "'target_usage' = 0 is outside (0, 1]"),
    (lambda t: t.replace("value = 45", "value = 99999999999"), "timeouts.nf_conntrack_udp_"
     "timeout.value: 99999999999 is outside 1..2,147,483"),
    (lambda t: NESTED + t, "nested too deeply"),
])
def test_hostile_profile_file_is_one_clean_line(tmp_path, tree, edit, problem):
    d = tmp_path / "rules"
    (d / "profiles").mkdir(parents=True)
    path = d / "profiles" / "site.toml"
    path.write_text(edit(profile()))
    code, out, err = run_main("audit", "--rules-dir", str(d), "--profile", "site",
                              "--no-sample", *tree_args(tree("defaults-16g")))
    assert code == 3, out
    assert err.count("\n") == 1, err
    assert err.startswith(f"ct-tune: {path}: ")
    assert problem in err


def test_hostile_files_as_a_separate_process_within_a_timeout(tmp_path, tree):
    """What the in-process cases show, once as the command itself (run_cli's timeout
    catches a hang): every file that cannot load is one line, in one run."""
    d = tmp_path / "rules"
    d.mkdir()
    texts = {
        "nan": rule(rid="nan").replace('title = "t"', "title = nan"),
        "inf": rule(rid="inf").replace('title = "t"', "title = 1e400"),
        "huge": rule(rid="huge").replace('title = "t"', "title = 99999999999999999999999"),
        "nested": NESTED + rule(rid="nested"),
        "parens": rule(rid="parens", recommended="(" * 3000 + "1" + ")" * 3000),
    }
    for name, text in texts.items():
        (d / f"{name}.toml").write_text(text)
    args = tree_args(tree("defaults-16g"))
    proc = run_cli("audit", "--no-builtin-rules", "--rules-dir", str(d), *args)
    assert proc.returncode == 3
    lines = proc.stderr.splitlines()
    assert sorted(line.split(": ")[1] for line in lines) == sorted(
        str(d / f"{name}.toml") for name in texts)
    assert "internal error" not in proc.stderr

    for n, rec in enumerate(["'a'*10**10", "range(10**9)|list|length", "10**10**10**10"]):
        one = tmp_path / f"eval{n}"
        one.mkdir()
        (one / "r.toml").write_text(rule(recommended=rec))
        proc = run_cli("audit", "--no-builtin-rules", "--rules-dir", str(one), "--no-sample",
                       *args)
        assert proc.returncode == 3
        assert proc.stderr.startswith(f"ct-tune: {one / 'r.toml'}: inject: expression ")
        assert "internal error" not in proc.stderr


def test_two_rules_for_one_key_still_render(tmp_path, tree):
    """The line check compares each line with the plan's settings, not one value per key:
    a site rule for a key a shipped rule also sets is written twice (the later wins at boot),
    as before, not refused as an injected line."""
    d = tmp_path / "rules"
    d.mkdir()
    (d / "a.toml").write_text(rule(rid="site-udp-a", recommended="45"))
    (d / "b.toml").write_text(rule(rid="site-udp-b", recommended="50"))
    code, out, err = run_main("audit", "--format", "sysctl", "--no-sample",
                              "--no-builtin-rules", "--rules-dir", str(d),
                              *tree_args(tree("defaults-16g")))
    assert code in (0, 1, 2), err
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith("#")]
    assert lines == ["net.netfilter.nf_conntrack_udp_timeout = 45",
                     "net.netfilter.nf_conntrack_udp_timeout = 50"]
