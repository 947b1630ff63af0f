"""Text from files ct-tune does not own, made safe to print or write as one line.

Rule and profile files, host files (the hostname, sysctl.d file names) and their
values end up in comments of the files apply writes and in one-line error messages.
A line break inside such text would start a new line: in a sysctl.d fragment that
line is a setting, in an error message it breaks the ``ct-tune: PATH: problem``
contract.  Every character ``str.splitlines()`` splits on, and every other control
character, is shown as an escape instead.
"""

from __future__ import annotations

#: C0 and C1 controls, DEL, and the Unicode line and paragraph separators: everything
#: str.splitlines() splits on (\n \r \x0b \x0c \x1c-\x1e \x85 \u2028 \u2029) and more,
#: each with its escape (a str.translate table: no regular expression to compile at start-up)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": " "}
_ESCAPES = {c: _NAMED.get(chr(c), f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")
            for c in (*range(0x20), *range(0x7f, 0xa0), 0x2028, 0x2029)}


def one_line(text: object) -> str:
    """str(text) with every line break and control character escaped (\\n, \\x0b, \\u2028)."""
    return str(text).translate(_ESCAPES)


def comment(text: object) -> str:
    """A comment line for a sysctl.d, modprobe.d or modules-load.d file: '# ' + one line."""
    return "# " + one_line(text)
