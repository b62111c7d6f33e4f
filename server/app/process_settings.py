"""Process-wide settings that only the entry point (:mod:`server.app.cli`) makes: the cyclic garbage collector
while the server starts and serves, and the imports the store's library would make at start-up.

Library code never touches either (``tests/unit/test_architecture.py``): they are decisions about the whole
process, which only the program that owns it may make. Each stays because it pays, measured by
``bench/startup.py`` in one run (20 starts each, load average 0.8-1.6; README "Start-up"):

- The collector. A serving process holds ~100 MB of long-lived objects (modules, pydantic schemas, the provider
  SDKs' types). With CPython's default thresholds (700, 10, 10) the collector walks them over and over: while
  the server is built, and above all while the warm start imports a provider SDK. Off while the server is built,
  then raised thresholds (:data:`THRESHOLDS`) and :func:`gc.freeze` of what start-up built and of what the warm
  start imported (https://docs.python.org/3/library/gc.html#gc.freeze): start -> first answer 115 ms faster
  through an openai-kind provider and 724 ms through an anthropic-kind one than with the collector left alone;
  ~0.6 ms less CPU per call over HTTP (``bench/http_load.py``). Reference counting frees everything that is not
  in a cycle regardless; objects frozen while in flight are not collected if they end up as cyclic garbage (a
  bounded, one-off cost per freeze).
- numpy. sqlite-utils try-imports numpy and pandas at module load, only to convert their values on insert, which
  this project never passes; numpy is installed (matplotlib needs it for charts). Importing the store with them
  blocked: 100-125 ms less CPU to the first answer (44-74 ms of wall time), 57 ms sooner to ``tools/list``.
  The store's thread imports sqlite-utils so at the store's first use (after ``tools/list``; the entry point
  passes :func:`import_without` to it). Later imports of numpy (a chart) work as usual: every request that
  draws one reads the store first, so none runs while sqlite-utils is imported.
"""

from __future__ import annotations

import gc
import importlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

THRESHOLDS = (10_000, 20, 20)  # generation 0 allocations, then collections of the younger generation
NOT_FOR_THE_STORE = ("numpy", "pandas")


def tune_for_serving() -> None:
    """Raise the collector's thresholds to :data:`THRESHOLDS` and freeze what is alive now (start-up state)."""
    gc.set_threshold(*THRESHOLDS)
    gc.freeze()


def freeze_long_lived() -> None:
    """Freeze what is alive now: call once the warm start has imported the provider SDKs (their modules live as
    long as the process)."""
    gc.freeze()


@contextmanager
def paused_for_start_up() -> Iterator[Callable[[], None]]:
    """Collections off for the block; yields ``serving``, to call once the server is built: it tunes the
    collector (:func:`tune_for_serving`) and turns it back on. Back on after the block in any case; a collector
    that was off before stays off."""
    collecting = gc.isenabled()
    gc.disable()

    def serving() -> None:
        tune_for_serving()  # freezes first: turning on must not start with one long pass over start-up's objects
        if collecting:
            gc.enable()

    try:
        yield serving
    finally:
        if collecting:
            gc.enable()


def import_without(module: str, blocked: Sequence[str] = NOT_FOR_THE_STORE) -> None:
    """Import ``module`` while ``import`` of each of ``blocked`` raises ``ImportError`` (for the optional imports
    of the libraries it loads); afterwards they import as usual. Does nothing when ``module`` is already loaded."""
    if module in sys.modules:
        return
    hidden = [name for name in blocked if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        importlib.import_module(module)
    finally:
        for name in hidden:
            if sys.modules.get(name) is None:
                del sys.modules[name]


def quiet_served_deprecations() -> None:
    """Hide the SDK's ``MCPDeprecationWarning`` for the logging capability when our protocol logging sends a
    notification: the capability is deprecated as of the 2026-07-28 revision (SEP-2577), but 2025-11-25 clients
    that asked for it with ``logging/setLevel`` are served on purpose (README "Tasks, logging and the 2026-07-28
    protocol"); left alone, every notification printed the warning on stderr."""
    from mcp.shared.exceptions import MCPDeprecationWarning

    warnings.filterwarnings("ignore", message="The logging capability is deprecated",
                            category=MCPDeprecationWarning, module=r"server\.app\.protocol_logging")
