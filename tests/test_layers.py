"""The layers run one way: pure knowledge and arithmetic never reach for I/O, and no two
modules import each other (directly or round a longer circle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "ct_tune"
PURE = {"engine", "plan", "fragments", "render", "drift", "whatif", "formulas", "parsers",
        "kernelmodel", "kubeproxy", "bootinit",
        "sysctld", "sysctlkeys", "findings", "flowparse", "flows", "check", "textfile",
        "nsload", "applyreport", "fleet", "fleet_table"}
IO = {"facts", "sampler", "ctsource", "apply", "atomic", "capture", "cli", "cache", "writers",
      "sockets", "nsview", "fleet_input", "reader", "launch"}


def imports() -> dict[str, set[str]]:
    """Each ct_tune module's ct_tune imports, at any depth (function-level ones too)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "ct_tune":
                    found |= {a.name for a in node.names}
                elif node.module.startswith("ct_tune."):
                    found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names
                          if a.name.startswith("ct_tune.")}
        graph[path.stem] = found - {path.stem, "__init__"}
    return graph


def test_pure_modules_import_no_io() -> None:
    graph = imports()
    bad = {m: sorted(graph[m] & IO) for m in PURE if graph.get(m, set()) & IO}
    assert bad == {}


def test_no_import_circles() -> None:
    graph = imports()
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in trail:
                circles.append([*trail[trail.index(nxt):], nxt])
            elif len(trail) < len(graph):
                visit(nxt, [*trail, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert circles == []


def test_one_spelling_of_short_names() -> None:
    """A key's short name is computed in sysctlkeys only."""
    offenders = [p.name for p in PACKAGE.glob("*.py")
                 if 'rsplit(".", 1)[-1]' in p.read_text() or "def _short(" in p.read_text()]
    assert offenders == []
