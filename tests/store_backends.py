"""The store backends the contract suite (``tests/unit/test_store_contract.py``) runs against.

A :class:`Backend` opens a :class:`~server.store.Store` at a place (a temporary folder): opening again at the same
place after :meth:`Store.aclose` finds what the backend keeps (its :attr:`Backend.persistent` parts), and nothing
of the others. To add a backend (PostgreSQL, say), add one entry to :data:`BACKENDS`; its ``open`` may reach
fixtures through ``request.getfixturevalue`` (a server URL, a fresh schema per place). A backend that needs the
integration lane (sockets, processes) can instead override the ``backend`` fixture in an integration module that
imports the contract tests (``from tests.unit.test_store_contract import *``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.store import Store

PARTS = frozenset({"calls", "guardrails", "conversations", "cache", "patterns", "workflows", "runs", "incidents",
                   "keys", "audit", "agents"})
"""Every part of a :class:`~server.store.Store` (one per protocol)."""


@dataclass(frozen=True)
class Backend:
    """One store implementation under test.

    Attributes:
        name: the test id.
        open: opens the store at ``place`` (same place, same data for the persistent parts).
        persistent: the parts whose data survive closing and opening again at the same place.
    """

    name: str
    open: Callable[[pytest.FixtureRequest, Path], Awaitable[Store]]
    persistent: frozenset[str]


async def _sqlite(request: pytest.FixtureRequest, place: Path) -> Store:
    from server.store.sqlite import SQLiteStore

    return SQLiteStore(place / "contract.db")


async def _memory(request: pytest.FixtureRequest, place: Path) -> Store:
    from server.store.memory import MemoryStore

    return MemoryStore()


async def _jsonfile(request: pytest.FixtureRequest, place: Path) -> Store:
    from server.store.jsonfile import JSONFileStore

    return JSONFileStore(place / "state.json")


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("sqlite", _sqlite, PARTS),
    "memory": Backend("memory", _memory, frozenset()),
    "jsonfile": Backend("jsonfile", _jsonfile, frozenset({"patterns", "workflows"})),  # simple mode's store
}
