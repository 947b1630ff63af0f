"""What users read cites primary sources, never files of ct-tune's development workspace.

Rule and profile texts reach --explain, the JSON report and the fragment written under
/etc; man pages and messages reach the user directly.  A citation of a file only the
developers had (the workspace's shared/reference notes, its seed incidents) points
nowhere for them, so every source must be one they can look up: a source file with the
function or identifier meant (kernel, kube-proxy, OpenWrt, ct-tune's own), a commit id,
an RFC, a manual page or a URL.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
WORKSPACE = ("shared/", "conntrack-facts", "seeds/")

USER_VISIBLE = sorted([*ROOT.glob("rules/*.toml"), *ROOT.glob("rules/profiles/*.toml"),
                       *ROOT.glob("ct_tune/*.py"), *ROOT.glob("ct_tune/templates/*"),
                       *ROOT.glob("man/*"), ROOT / "README.md"])

_PATH = r"(?:[\w.-]+/)+[\w.*-]+"
PRIMARY = [
    re.compile(r"https?://\S+"),
    re.compile(r"\bRFC \d{3,5}\b"),
    re.compile(r"\b[0-9a-f]{12,40}\b"),                       # a commit id
    re.compile(r"\b[a-z][\w.-]*\(\d\)"),                      # a manual page: sysctl.d(5)
    # a C file with the function, array or identifier meant
    re.compile(_PATH + r"\.[ch]\b.*?\b(?:\w+\(\)|\w+\[|[a-z_]\w*_\w+|[A-Z][A-Z0-9]*_[A-Z0-9_]+)"),
    # another project file (kube-proxy's Go, OpenWrt's files, documentation, ct-tune's own)
    re.compile(_PATH + r"\.(?:go|py|rst|conf|libsonnet|toml|md|yaml)\b"),
]


def _sources(path: Path) -> list[str]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    found: list[str] = list(data.get("sources", []))

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "source" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)

    walk({k: v for k, v in data.items() if k != "sources"})
    return found


def test_nothing_users_see_mentions_the_development_workspace():
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:90]}"
            for p in USER_VISIBLE if p.is_file()
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if any(w in line for w in WORKSPACE)]
    assert hits == []


RULE_FILES = sorted([*ROOT.glob("rules/*.toml"), *ROOT.glob("rules/profiles/*.toml")])


@pytest.mark.parametrize("path", RULE_FILES, ids=[p.stem for p in RULE_FILES])
def test_every_source_is_one_a_user_can_look_up(path: Path):
    sources = _sources(path)
    if path.parent.name == "rules":
        assert sources, f"{path.name}: no sources"
    vague = [s for s in sources
             if re.search(r"\bseed\b", s, re.I) or not any(p.search(s) for p in PRIMARY)]
    assert vague == []


def test_the_check_tells_primary_sources_from_vague_ones():
    def ok(s: str) -> bool:
        return any(p.search(s) for p in PRIMARY)

    assert ok("net/netfilter/nf_conntrack_core.c: gc_worker() evicts")
    assert ok("net/netfilter/nf_conntrack_proto_tcp.c: tcp_timeouts[TCP_CONNTRACK_CLOSE_WAIT]")
    assert ok("commits 71d8c47fc653 and ed07d9a021df")
    assert ok("RFC 5382 section 5") and ok("systemd sysctl.d(5): read in order")
    assert ok("https://github.com/systemd/systemd/issues/1113")
    assert ok("kubernetes pkg/proxy/apis/config/v1alpha1/defaults.go (TCPEstablishedTimeout)")
    assert not ok("net/netfilter/nf_conntrack_core.c")  # which part of it?
    assert not ok("weave.works blog post (2018); kubernetes issue #56903")
    assert not ok("node-mixin NodeConntrackLimitNearing (75 %)")
    assert not ok("the profile sets the value and cites its own source")
