"""The serving lock of a SQLite database (one serving process per database) and the DBOS executor id of a
database. ``flock`` locks belong to an open file description, so two holders in one process conflict just as two
processes do; ``tests/integration/test_store_durability.py`` has the two-process test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.store.errors import StoreUnavailable
from server.store.serving_lock import DatabaseInUse, database_executor_id, hold_serving_lock, lock_path


def test_a_second_holder_is_refused_naming_the_holder_and_the_team_deployment(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    with hold_serving_lock(database):
        with pytest.raises(DatabaseInUse) as refused:
            hold_serving_lock(database)
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and str(database) in message and "PostgreSQL" in message
        assert refused.value.condition == "locked" and "\n" not in message
    with hold_serving_lock(database):  # released by close: the next server may serve
        pass
    assert lock_path(database).exists()  # left in place: removing it would race a process taking it


def test_the_lock_is_per_database(tmp_path: Path) -> None:
    with hold_serving_lock(tmp_path / "a.db"), hold_serving_lock(tmp_path / "b.db"):
        pass


def test_an_in_memory_database_needs_no_lock() -> None:
    with hold_serving_lock(":memory:"), hold_serving_lock(":memory:"):
        pass


def test_a_lock_file_that_cannot_be_made_names_the_database(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    database = tmp_path / "file" / "state.db"
    with pytest.raises(StoreUnavailable) as refused:
        hold_serving_lock(database)
    assert str(database) in str(refused.value) and "\n" not in str(refused.value)


def test_executor_ids_are_stable_per_database_and_differ_between_databases(tmp_path: Path) -> None:
    first = database_executor_id(tmp_path / "a.db")
    assert first == database_executor_id(str(tmp_path / "x" / ".." / "a.db"))
    assert first != database_executor_id(tmp_path / "b.db")
    assert first.startswith("db-") and first != "local"
