"""Where rule and profile files come from, and reading them as TOML.

Search order (later wins on the same id or name): the rules shipped in the
package, then /etc/ct-tune/rules.d, then each --rules-dir in the order given.
A rules directory may hold a ``profiles/`` folder of profile files too, so a
site keeps its rules and its profiles side by side.
"""

from __future__ import annotations

import importlib
import math
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ct_tune import safeio
from ct_tune.errors import InputError

SITE_RULES_DIR = Path("/etc/ct-tune/rules.d")


def builtin_dir() -> Path:
    """The rules/ folder shipped in the package (wheel, sdist and editable installs), or
    the checkout's top-level rules/ when ct_tune is run from source without installing.

    The folder of the ct_tune.rules package, as importlib.resources.files names it, read
    from the package itself: importlib.resources and the zipfile module it imports cost
    about 3 ms of every audit's start-up."""
    try:
        package = importlib.import_module("ct_tune.rules")
    except ModuleNotFoundError:
        package = None
    if package is None or package.__file__ is None:
        return Path(__file__).resolve().parent.parent / "rules"
    return Path(package.__file__).parent


def search_path(extra: Sequence[str | Path] = (), builtin: bool = True,
                site: Path | None = SITE_RULES_DIR) -> list[Path]:
    """Rule directories in precedence order, lowest first."""
    dirs: list[Path] = []
    if builtin:
        dirs.append(builtin_dir())
    if site is not None and site.is_dir():
        dirs.append(site)
    for d in extra:
        p = Path(d)
        if not p.is_dir():
            raise InputError(str(p), "rules directory does not exist")
        dirs.append(p)
    return dirs


def toml_files(directory: Path) -> Iterator[Path]:
    """The *.toml entries of one directory, in name order (not recursive).  Every entry
    so named is a rule or profile file: one that is not a regular file (a FIFO, a
    directory) is reported by read_toml rather than silently left out."""
    if directory.is_dir():
        yield from sorted(directory.glob("*.toml"))


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into one ``PATH: problem`` line."""
    text = safeio.read_text(path, safeio.RULE)
    assert text is not None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(str(path), f"invalid TOML: {e}") from None
    except RecursionError:
        raise InputError(str(path), "invalid TOML: arrays or tables nested too deeply") from None
    except ValueError as e:  # an integer past Python's digit limit
        raise InputError(str(path), f"invalid TOML: {e}") from None


#: TOML integers are 64-bit signed (toml.io, "Integer"); Python's tomllib reads any size
INT64 = 2**63


def number_problem(data: Any) -> str | None:
    """Where a decoded file holds a number no rule or profile may use (nan, inf, an
    integer beyond 64 bits), as 'dotted.key: what', or None.  Iterative: tomllib has
    already bounded the nesting depth, this only has to not add a recursion of its own."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where or 'value'}: {value} is not a finite number"
        if isinstance(value, int) and not -INT64 <= value < INT64:
            return f"{where or 'value'}: integer out of range (TOML integers are 64-bit)"
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return None
