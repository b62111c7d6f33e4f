"""The store contract (``tests/unit/test_store_contract.py``) on PostgreSQL: every protocol, in a fresh database
per test, with everything kept across a reopen (a PostgreSQL backend persists every part)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.store import Store
from tests.store_backends import PARTS, Backend
from tests.unit.test_store_contract import *  # noqa: F403 - the contract's tests and its `store` fixture


async def _postgres(request: pytest.FixtureRequest, place: Path) -> Store:
    from server.store.location import PostgresDatabase
    from server.store.postgres import PostgresStore

    return PostgresStore(PostgresDatabase(request.getfixturevalue("postgres_url")))  # the same database per test


@pytest.fixture
def backend() -> Backend:
    return Backend("postgres", _postgres, PARTS)
