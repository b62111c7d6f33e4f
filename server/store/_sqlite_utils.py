"""Import sqlite-utils without the numpy and pandas it try-imports at module load.

sqlite-utils only uses them to convert numpy/pandas values on insert, which this project never passes; numpy
is installed here (matplotlib needs it), and importing it would add 100-300 ms to every full-mode start.
Import ``sqlite_utils`` through this module first; later imports of numpy (charts) work as usual.
"""

from __future__ import annotations

import sys

_BLOCKED = ("numpy", "pandas")


def _import() -> None:
    if "sqlite_utils" in sys.modules:
        return
    blocked = [name for name in _BLOCKED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for name in blocked:
            if sys.modules.get(name) is None:
                del sys.modules[name]


_import()
