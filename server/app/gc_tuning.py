"""Garbage-collector settings for a long-running server process.

A serving process holds ~100 MB of long-lived objects (modules, pydantic schemas, the provider SDKs' types).
With CPython's default thresholds (700, 10, 10) the cyclic collector walks them over and over under load:
measured at 0.6–0.9 ms of CPU per ``orchestrate`` call over HTTP, about 15% of the server's CPU
(``bench/http_load.py``). Two standard remedies (https://docs.python.org/3/library/gc.html#gc.freeze):

- :func:`gc.freeze` moves every object alive now into a permanent generation that collections skip. It is
  called once the server is built and again after each lazy import of a heavy library (a provider SDK), so
  what is frozen is almost entirely module-level state that lives as long as the process anyway. Objects of
  requests in flight at that moment are frozen too; if they end up as cyclic garbage they are not reclaimed —
  a bounded, one-off cost per freeze.
- Larger thresholds for the young generations: a request allocates thousands of short-lived objects, most
  freed by reference counting; collecting every 700 allocations mostly finds nothing.

Start-up is the extreme case: building the server allocates ~130,000 objects that stay (the MCP SDK's and our
models, schemas, modules) and little garbage (~1,300 unreachable objects), and the collector's passes over that
growing heap cost ~45 ms of every start (``bench/startup.py``). :func:`paused_for_start_up` keeps it off until
the server is built; it resumes tuned (and with all of that frozen) just before the server serves.

Reference counting frees everything that is not in a cycle regardless of these settings.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

THRESHOLDS = (10_000, 20, 20)  # generation 0 allocations, then collections of the younger generation


def tune_for_serving() -> None:
    """Raise the collector's thresholds to :data:`THRESHOLDS` and freeze what is alive now (start-up state)."""
    gc.set_threshold(*THRESHOLDS)
    gc.freeze()


def freeze_long_lived() -> None:
    """Freeze what is alive now; call after a lazy import of a large library (its modules live forever)."""
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
