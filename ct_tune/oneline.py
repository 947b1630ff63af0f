"""Text from files ct-tune does not own, made safe to print or write as one line.

Rule and profile files, host files (the hostname, sysctl.d file names) and their
values end up in comments of the files apply writes and in one-line error messages.
A line break inside such text would start a new line: in a sysctl.d fragment that
line is a setting, in an error message it breaks the ``ct-tune: PATH: problem``
contract.  Every character ``str.splitlines()`` splits on, and every other control
character, is shown as an escape instead.
"""

from __future__ import annotations

import re

#: C0 and C1 controls, DEL, and the Unicode line and paragraph separators: everything
#: str.splitlines() splits on (\n \r \x0b \x0c \x1c-\x1e \x85 \u2028 \u2029) and more
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": " "}


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _NAMED:
        return _NAMED[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def one_line(text: object) -> str:
    """str(text) with every line break and control character escaped (\\n, \\x0b, \\u2028)."""
    return _CONTROL.sub(_escape, str(text))


def comment(text: object) -> str:
    """A comment line for a sysctl.d, modprobe.d or modules-load.d file: '# ' + one line."""
    return "# " + one_line(text)
