"""The built-in pattern library: TOML files in ``knowledge/library/``, one pattern per file.

A file holds the fields of :class:`knowledge.model.PatternSpec` (``name`` defaults to the file's stem)::

    description = "Review a code change …"
    template = \"\"\"… {{ diff }} …\"\"\"
    apply_to = []
    [metadata]
    domain = "engineering"
    tags = ["code", "review"]
    [[variables]]
    name = "diff"
    description = "The unified diff to review."

They are loaded on start (:meth:`knowledge.registry.PatternRegistry.load_library`); a registered pattern of
the same name overrides a built-in one.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from knowledge.errors import InvalidPattern
from knowledge.model import PatternSpec, validate_spec

LIBRARY_DIR = Path(__file__).resolve().parent / "library"


def builtin_patterns(folder: Path = LIBRARY_DIR) -> list[PatternSpec]:
    """Every pattern file in ``folder``, validated, ordered by name.

    Raises:
        InvalidPattern: a file is not valid TOML or not a valid pattern (the message names the file).
    """
    specs = []
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            specs.append(validate_spec({"name": path.stem, **data}))
        except (tomllib.TOMLDecodeError, InvalidPattern) as exc:
            raise InvalidPattern(f"built-in pattern file {path.name}: {exc}", pattern=path.stem) from exc
    return specs
