"""The SQLite store's own machinery: migrations, WAL, the owning thread, flush on close, batch isolation, open
failures. (What every store must do is in ``test_store_contract.py``.)"""

from __future__ import annotations

import errno
import sqlite3
import threading
from pathlib import Path

import anyio
import anyio.abc
import pytest

from server.store import CallRecord, StorageError, StoreUnavailable
from server.store.migrations import MIGRATIONS
from server.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def record(i: int, model: str = "m") -> CallRecord:
    return CallRecord(ts=1000.0 + i, call_id=f"c{i}", tool="orchestrate", provider="a", model=model, status="ok",
                      latency_ms=10.0, input_tokens=3, output_tokens=5, cost_usd=0.001)


async def test_records_queued_before_close_are_all_stored(tmp_path: Path) -> None:
    path = tmp_path / "flush.db"
    store = SQLiteStore(path)
    for i in range(5000):
        store.calls.record_call(record(i))
    await store.aclose()  # no flush before: close must write everything queued
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 5000


async def test_database_survives_reopen_and_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "re.db"
    first = SQLiteStore(path)
    first.calls.record_call(record(1))
    await first.aclose()
    second = SQLiteStore(path)
    assert await second.calls.count_calls() == 1
    await second.aclose()
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM _migrations")] == [name for name, _ in MIGRATIONS]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_store_connection_lives_on_one_dedicated_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    # Every call runs on the store's own thread, whichever thread asks.
    names = {await store.database.call(lambda db: threading.current_thread().name, "the thread") for _ in range(5)}
    names.add(await store.database.write(lambda db: threading.current_thread().name, "the thread"))
    await store.aclose()
    assert names == {"sqlite-store"}


async def test_an_unusable_path_fails_at_open_naming_the_path_and_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "sub" / "db.sqlite"
    with pytest.raises(StoreUnavailable) as raised:
        SQLiteStore(target)
    message = str(raised.value)
    assert str(target) in message and "\n" not in message and raised.value.condition == "cannot open", message


async def test_a_file_that_is_not_a_database_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a SQLite database at all" * 200)
    with pytest.raises(StoreUnavailable, match=r"garbage\.db: .*\(corrupt\)$"):
        SQLiteStore(path)
    assert path.read_bytes().startswith(b"this is not")  # left as it was


async def test_a_closed_store_refuses_reads_and_drops_queued_writes_without_crashing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    await store.aclose()
    store.calls.record_call(record(1))  # dropped with a warning, never raised into the caller
    with pytest.raises(StorageError, match=r"\(closed\)"):
        await store.calls.flush()
    with pytest.raises(StorageError, match=r"could not store the conversation turns: .*\(closed\)"):
        await store.conversations.append_turns("c", [("user", "hi")], 1.0)


class Gate:
    """Keeps the store's thread busy until :meth:`release`, so what is queued meanwhile lands in one batch."""

    def __init__(self, store: SQLiteStore, group: anyio.abc.TaskGroup) -> None:
        self._event = threading.Event()
        group.start_soon(store.database.call, lambda db: self._event.wait(10), "the gate")

    async def release(self) -> None:
        self._event.set()


async def test_a_bad_call_record_in_a_batch_is_dropped_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "batch.db")
    try:
        async with anyio.create_task_group() as group:
            gate = Gate(store, group)
            for i in range(50):
                store.calls.record_call(record(i, model="m\ud800" if i == 17 else "m"))
            group.start_soon(store.conversations.append_turns, "kept", [("user", "hi")], 1.0)
            group.start_soon(gate.release)  # runs after the append above has queued its write
        await store.calls.flush()
        assert await store.calls.count_calls() == 49
        assert store.database.dropped == 1
        assert await store.conversations.load_turns("kept") == [("user", "hi")]
    finally:
        await store.aclose()


async def test_an_awaited_write_that_fails_in_a_savepoint_leaves_the_batch_committed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "savepoint.db")

    def failing(db: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    try:
        results: dict[str, object] = {}

        async def attempt(name: str, fn: object) -> None:
            try:
                results[name] = await store.database.write(fn, name)  # type: ignore[arg-type]
            except StorageError as exc:
                results[name] = exc

        async with anyio.create_task_group() as group:
            gate = Gate(store, group)
            group.start_soon(attempt, "first", lambda db: db.execute("CREATE TABLE t (x)") and "ok")
            group.start_soon(attempt, "bad", failing)
            group.start_soon(attempt, "last", lambda db: db.execute("INSERT INTO t VALUES (1)") and "ok")
            group.start_soon(gate.release)
        assert results["first"] == "ok" and results["last"] == "ok"
        assert isinstance(results["bad"], StorageError) and results["bad"].condition == "error"
        assert await store.database.call(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0], "t") == 1
    finally:
        await store.aclose()


async def test_a_write_awaited_behind_queued_records_does_not_wait_for_their_linger(tmp_path: Path) -> None:
    # An orchestrate call queues its call record, then awaits its conversation turns. The records' batch waits
    # for more records (here a minute, to make the difference plain); the awaited write must end that wait.
    from server.store.sqlite_db import SQLiteDatabase

    database = SQLiteDatabase(tmp_path / "linger.db", linger_s=60)
    try:
        database.record(record(1))
        with anyio.fail_after(10):
            while not database._queue.empty():  # the store thread took the record: it waits for more now
                await anyio.sleep(0.001)  # bounded-wait: the store thread's queue; fail_after bounds it
            assert await database.write(lambda db: db.execute("SELECT count(*) FROM calls").fetchone()[0],
                                        "a count") == 1  # the record went in the same transaction
            database.record(record(2))
            assert await database.call(lambda db: db.execute("SELECT count(*) FROM calls").fetchone()[0],
                                       "a count") == 2  # a read ends the wait too, after the queued record
    finally:
        await anyio.to_thread.run_sync(database.close)


async def test_a_short_command_waits_longer_for_the_servers_write_lock(tmp_path: Path) -> None:
    from server.app.assembly import open_store
    from server.store.sqlite import COMMAND_BUSY_TIMEOUT_S

    path = tmp_path / "s.db"
    holder = sqlite3.connect(path, isolation_level=None)  # stands for the serving process, mid-write
    server, command = SQLiteStore(path, busy_timeout_s=0.05), open_store(path, command=True)
    try:
        waits = [await s.database.call(lambda db: db.execute("PRAGMA busy_timeout").fetchone()[0], "the timeout")
                 for s in (server, command)]
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageError, match="locked"):
            await server.keys.revoke_api_key("k", 1.0)  # a write: it gives up after its 50 ms
        holder.execute("ROLLBACK")
    finally:
        holder.close()
        await server.aclose()
        await command.aclose()
    assert waits == [50, COMMAND_BUSY_TIMEOUT_S * 1000]


async def test_a_failed_set_up_refuses_what_is_queued_naming_the_condition_and_a_later_operation_sets_up(
        tmp_path: Path) -> None:
    attempts: list[int] = []
    both_queued = threading.Event()

    def import_library() -> None:  # the set-up's first step, failing once (as a full disk would fail a migration)
        attempts.append(1)
        if len(attempts) == 1:
            both_queued.wait(10)
            raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "s.db"
    store = SQLiteStore(path, import_library=import_library)
    try:
        assert attempts == []  # opened, not set up: nothing used it yet
        async with anyio.create_task_group() as group:
            failures: list[BaseException] = []

            async def read(name: str) -> None:
                try:
                    await store.patterns.get_pattern(name)
                except StorageError as exc:
                    failures.append(exc)

            group.start_soon(read, "a")
            group.start_soon(read, "b")
            await anyio.wait_all_tasks_blocked()
            both_queued.set()
        assert attempts == [1] and len(failures) == 2  # one set-up attempt for both
        for failure in failures:
            assert not isinstance(failure, StoreUnavailable) and failure.condition == "disk full"
            assert str(path) not in str(failure) and str(tmp_path) not in str(failure)  # a client sees no path
        assert await store.patterns.get_pattern("x") is None and attempts == [1, 1]  # tried again, and set up
    finally:
        await store.aclose()
