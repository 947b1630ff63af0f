"""Writing TOML text in tests: hostile strings must reach the parser exactly."""

from __future__ import annotations


def toml_str(text: str) -> str:
    """A TOML basic string holding text exactly (control characters as \\u escapes)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
