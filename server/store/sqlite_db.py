"""The SQLite database behind every SQLite store protocol: one dedicated thread owns the connection.

A SQLite connection belongs to the thread that opened it, and anyio's worker threads rotate, so one thread
opens the database (WAL mode), migrates it and serves every operation from a queue, in order:

- **queued writes** (:meth:`SQLiteDatabase.record`, :meth:`SQLiteDatabase.enqueue`: call records, guardrail
  decisions, cache entries) return at once; **awaited writes** (:meth:`SQLiteDatabase.write`: conversation
  turns) return once committed. Writes queued together go in one transaction (group commit), each in its own
  savepoint, so a write that fails rolls back alone and the others commit. If the transaction as a whole fails
  (say, at COMMIT), every write in it is retried on its own: one bad row never takes another caller's with it.
- **calls** (:meth:`SQLiteDatabase.call`) run alone, after every write queued before them is committed, so a
  read sees those; a call that writes runs in a transaction of its own (``BEGIN IMMEDIATE``, so it waits for
  another connection's write lock up front), in which its ``db.atomic()`` is a savepoint.
- an acknowledged write (awaited, or a call that writes) is on the disk when it returns (``synchronous=FULL``);
  a batch of queued writes only reaches the operating system (``NORMAL``: it survives the process, not a power
  cut).

Failures reach the caller of an awaited write or a call as :class:`server.store.errors.StorageError` naming the
condition; a queued write that fails is logged (its kind and the condition, never its content) and dropped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from server.store import sqlite_ops as ops_sql
from server.store.errors import STORAGE_FAILURES, StorageError, StoreUnavailable, condition_of
from server.store.migrations import migrate
from server.store.records import CallRecord

if TYPE_CHECKING:
    import sqlite_utils

logger = logging.getLogger(__name__)
T = TypeVar("T")
Work = Callable[["sqlite_utils.Database"], Any]
_STOP = object()
_CLOSE_TIMEOUT_S = 30.0
_LINGER_S = 0.005
_LINGER_BELOW = 500
BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another connection's write lock before it fails as ``locked`` (SQLite's
``busy_timeout``): the serving process's default; short commands beside a busy server wait longer
(:data:`server.store.sqlite.COMMAND_BUSY_TIMEOUT_S`)."""
_FAILURES = (sqlite3.Error, *STORAGE_FAILURES)


@dataclass(slots=True)
class _Write:
    """A write for the next batch; ``future`` is ``None`` for a queued (fire-and-forget) one."""

    fn: Work
    what: str
    future: Future[Any] | None = None


@dataclass(slots=True)
class _Call:
    fn: Work
    what: str
    write: bool
    future: Future[Any]


_Batched = CallRecord | _Write


class SQLiteDatabase:
    """A SQLite file (or ``":memory:"``) served by its own thread.

    The thread opens the file at once (so an unusable path fails here), and sets the rest up (sqlite-utils, the
    pragmas, the migrations) when the store is first used: a server answers its handshake and ``tools/list``
    without them, and its warm start uses the store first (:mod:`server.app.warmup`).

    Args:
        path: the database file, created with its folder if missing.
        linger_s: how long a batch of queued call records only waits for more before it is committed (seconds);
            a write someone awaits, or a read, ends the wait at once.
        import_library: imports sqlite-utils on the store's thread, before its first use (the entry point
            passes its own, see :func:`server.app.process_settings.import_without`); default: a plain import.

    Raises:
        StoreUnavailable: the database cannot be opened (names the path and the reason). If the set-up then
            fails (a full disk during a migration), the operations queued meanwhile fail with a
            :class:`StorageError` naming the condition (the operator's log names the path), and the next one
            queued tries again.
    """

    failures: tuple[type[BaseException], ...] = _FAILURES
    """What counts as the storage failing (a :class:`StorageError` for the caller); anything else is a bug."""

    def __init__(self, path: str | Path, *, linger_s: float = _LINGER_S,
                 busy_timeout_s: float = BUSY_TIMEOUT_S,
                 import_library: Callable[[], object] | None = None) -> None:
        self.path = str(path)
        self._linger_s = linger_s
        self._busy_timeout_ms = round(busy_timeout_s * 1000)
        self._import_library = import_library or _import_sqlite_utils
        self.dropped = 0
        """Queued writes that could not be stored (each logged)."""
        self._read_only_said = False
        self._synchronous = ""  # the connection's PRAGMA synchronous (owning thread only)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        opened: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(opened,), name="sqlite-store", daemon=True)
        self._thread.start()
        try:
            opened.result()
        except BaseException as exc:
            self._thread.join(_CLOSE_TIMEOUT_S)
            raise StoreUnavailable(self.path, _explained(self.path, exc)) from None

    # -- the owning thread ------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """The connection, in WAL mode: what shows an unusable path (a directory, a file that is not a database,
        a read-only file system) without sqlite-utils."""
        if self.path == ":memory:":
            return sqlite3.connect(":memory:")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path)
        try:
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":  # as sqlite-utils' enable_wal()
                conn.execute("PRAGMA journal_mode=wal")
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> sqlite_utils.Database:
        self._import_library()
        import sqlite_utils

        db = sqlite_utils.Database(conn)
        self._durable(db, True)
        # Reads (pattern search, lookups) touch pages all over a library of thousands of patterns: a 32 MB
        # page cache and memory-mapped reads keep them off the read() syscall path.
        db.execute("PRAGMA cache_size=-32000")
        db.execute("PRAGMA mmap_size=268435456")
        migrate(db)
        return db

    @staticmethod
    def _transaction(db: sqlite_utils.Database) -> AbstractContextManager[None]:
        """A batch's write transaction (see :func:`_immediate`)."""
        return _immediate(db)

    @staticmethod
    def _call_transaction(db: sqlite_utils.Database) -> AbstractContextManager[None]:
        """The write transaction around a call that writes (see :func:`_immediate`)."""
        return _immediate(db)

    def _run(self, opened: Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(None)
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _serve(self, conn: Any) -> None:
        db = None
        while db is None:  # set up at the first operation; if that fails, the next one queued after tries again
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                db = self._set_up(conn)
            except Exception as exc:  # noqa: BLE001 - never kills the thread; each waiter gets the condition
                self._synchronous = ""
                if self._refuse_queued(item, exc):
                    return
        self._work(db, item)

    def _refuse_queued(self, item: Any, exc: BaseException) -> bool:
        """The set-up failed: ``item`` and every operation queued behind it are refused (the next one queued
        later tries the set-up again). Returns whether :data:`_STOP` was among them."""
        exc = self._named(exc)
        logger.error("database %s: %s", self.path, StoreUnavailable(self.path, _explained(self.path, exc)),
                     exc_info=None if isinstance(exc, self.failures) else exc)  # a bug: its traceback too
        queued = [item]
        while queued[-1] is not _STOP:  # taken before any is answered: what an answer prompts comes after
            try:
                queued.append(self._queue.get_nowait())
            except queue.Empty:
                break
        stopped = queued[-1] is _STOP
        for waiting in queued[:-1] if stopped else queued:
            future = None if isinstance(waiting, CallRecord) else waiting.future
            if future is None:
                self.dropped += 1
            elif future.set_running_or_notify_cancel():
                write = not isinstance(waiting, _Call) or waiting.write
                future.set_exception(_translated(exc, waiting.what, write=write, failures=self.failures))
        return stopped

    def _work(self, db: sqlite_utils.Database, item: Any) -> None:
        """Serve ``item`` and every operation after it, in order, until :data:`_STOP`."""
        while True:
            batch: list[_Batched] = []
            awaited = False
            linger_until: float | None = None
            while True:
                if isinstance(item, (CallRecord, _Write)):
                    batch.append(item)
                    awaited = awaited or (isinstance(item, _Write) and item.future is not None)
                else:
                    self._commit(db, batch)
                    batch, awaited = [], False
                    if item is _STOP:
                        return
                    self._call(db, item)
                try:
                    item = self._queue.get_nowait()
                    continue
                except queue.Empty:
                    pass
                if awaited or not batch or len(batch) >= _LINGER_BELOW:
                    break
                # Only queued records in: wait a moment for more (GIL released), so a burst lands in one
                # transaction instead of one commit per record. Whatever arrives meanwhile joins the batch at
                # once, and a write someone awaits (an orchestrate call's conversation turns, queued right after
                # its call record) or a read ends the wait: nobody waiting on the store waits for this.
                if linger_until is None:
                    linger_until = time.monotonic() + self._linger_s
                try:
                    item = self._queue.get(timeout=max(0.0, linger_until - time.monotonic()))
                except queue.Empty:
                    break
            self._commit(db, batch)
            item = self._queue.get()

    def _commit(self, db: sqlite_utils.Database, batch: list[_Batched]) -> None:
        """Store the batch (a write whose caller gave up waiting before it ran is not made)."""
        batch = [item for item in batch if not isinstance(item, _Write) or item.future is None
                 or item.future.set_running_or_notify_cancel()]
        if batch:
            self._apply(db, batch)

    def _durable(self, db: sqlite_utils.Database, durable: bool) -> None:
        """Commits from now on reach the disk before they return (``durable``), or only the operating system.

        In WAL mode ``synchronous=NORMAL`` commits survive the process being killed, not the operating system
        losing what it has not written yet (a power cut, or a file system the kernel turned read-only after a
        disk error, which drops its unwritten pages); ``FULL`` syncs the WAL at each commit
        (https://www.sqlite.org/pragma.html#pragma_synchronous). An acknowledged write (awaited, or a call that
        writes) commits with ``FULL``; a batch of queued records only with ``NORMAL``: they are fire-and-forget."""
        mode = "FULL" if durable else "NORMAL"
        # SQLite refuses the change inside a transaction ("Safety level may not be changed inside a
        # transaction"); none is open here (a call's is committed or rolled back before anything else runs).
        if mode != self._synchronous and not db.conn.in_transaction:
            db.execute(f"PRAGMA synchronous={mode}")
            self._synchronous = mode

    def _apply(self, db: sqlite_utils.Database, batch: list[_Batched]) -> None:
        """The batch in one transaction, each write in a savepoint; retried item by item if it fails whole."""
        records = [item for item in batch if isinstance(item, CallRecord)]
        writes = [item for item in batch if isinstance(item, _Write)]
        outcomes: list[tuple[_Write, bool, Any]] = []
        self._durable(db, any(write.future is not None for write in writes))
        try:
            with self._transaction(db):
                if records:
                    self._insert_calls(db, records)
                for write in writes:
                    try:
                        with db.atomic():  # a savepoint: a failing write rolls back alone
                            outcomes.append((write, True, write.fn(db)))
                    except Exception as exc:  # noqa: BLE001 - the write's own failure, handed to its caller
                        if not db.conn.in_transaction:
                            raise  # SQLite rolled the whole transaction back: retry item by item below
                        outcomes.append((write, False, exc))
        except Exception as exc:  # noqa: BLE001 - never kills the thread; every item gets its outcome
            if len(batch) > 1:
                for item in batch:
                    self._apply(db, [item])
                return
            self._fail(batch[0], exc)
            return
        for write, ok, value in outcomes:
            if ok:
                if write.future is not None:
                    write.future.set_result(value)
            else:
                self._fail(write, value)

    @staticmethod
    def _insert_calls(db: Any, records: list[CallRecord]) -> None:
        """Insert raw call records and count them into their aggregates (inside the batch's transaction)."""
        ops_sql.insert_calls(db, records)

    def _fail(self, item: _Batched, exc: BaseException) -> None:
        what = "a call record" if isinstance(item, CallRecord) else item.what
        future = None if isinstance(item, CallRecord) else item.future
        exc = self._named(exc)
        if future is None:
            self.dropped += 1
            logger.warning("database %s: %s was not stored (%s); dropped", self.path, what, condition_of(exc))
        else:
            logger.error("database %s: %s was not stored (%s)", self.path, what, condition_of(exc))
            future.set_exception(_translated(exc, what, write=True, failures=self.failures))

    def _named(self, exc: BaseException) -> BaseException:
        """``exc``, or the read-only file system behind an I/O error on a write.

        SQLite reports a write that the file system refuses with ``EROFS`` as ``SQLITE_IOERR_WRITE`` (it keeps no
        errno), and a file system that turned read-only while serving (ext4's ``errors=remount-ro`` after a disk
        error) shows no read-only flag in ``statvfs``: so the database file's times are set to what they are,
        which such a file system refuses with ``EROFS`` and any other accepts, changing nothing."""
        if self.path == ":memory:" or condition_of(exc) != "I/O error":
            return exc
        try:
            stat = os.stat(self.path)
            os.utime(self.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        except OSError as probe:
            if probe.errno == errno.EROFS:
                if not self._read_only_said:
                    self._read_only_said = True
                    logger.error("database %s: the file system turned read-only while the server runs; writes "
                                 "fail, reads go on. A file system the kernel made read-only after an error is "
                                 "repaired only unmounted: stop the server, repair it, start the server again",
                                 self.path)
                return OSError(errno.EROFS, "the file system is read-only")
        return exc

    def _call(self, db: sqlite_utils.Database, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        if call.write:
            self._durable(db, True)
        try:
            if call.write:
                with self._call_transaction(db):  # the call's own db.atomic() is a savepoint in it
                    result = call.fn(db)
            else:
                result = call.fn(db)
                if db.conn.in_transaction:  # a read that wrote: not kept, or every later batch would fail
                    db.rollback()
                    logger.error("database %s: %s opened a transaction as a read; rolled back", self.path, call.what)
            call.future.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            if db.conn.in_transaction:
                db.rollback()  # a call must never leave a transaction open for the next batch
            call.future.set_exception(_translated(self._named(exc), call.what, write=call.write,
                                                  failures=self.failures))

    # -- the async side ---------------------------------------------------------------------------------

    def _check_open(self, what: str, write: bool) -> None:
        if self._closed:
            raise StorageError("closed", what, write=write)

    async def call(self, fn: Callable[[sqlite_utils.Database], T], what: str, *, write: bool = False) -> T:
        """Run ``fn(db)`` on the owning thread, after every write queued before it. With ``write``, in a
        transaction of its own, committed when this returns (``fn`` must not commit it itself: no
        ``with db.conn`` or ``commit()``; its ``db.atomic()`` blocks are savepoints).

        Raises:
            StorageError: the database failed (``what`` names what was read or stored).
        """
        self._check_open(what, write)
        future: Future[T] = Future()
        self._queue.put(_Call(fn, what, write, future))
        return await asyncio.wrap_future(future)

    async def write(self, fn: Callable[[sqlite_utils.Database], T], what: str) -> T:
        """Run ``fn(db)`` in the next batch's transaction (in a savepoint of its own); returns its result once
        committed.

        Raises:
            StorageError: this write was not stored (the others in its batch are not affected).
        """
        self._check_open(what, True)
        future: Future[T] = Future()
        self._queue.put(_Write(fn, what, future))
        return await asyncio.wrap_future(future)

    def enqueue(self, fn: Work, what: str) -> None:
        """Queue ``fn(db)`` for the next batch and return at once (dropped with a warning once closed)."""
        if self._closed:
            logger.warning("%s dropped: store already closed", what)
            return
        self._queue.put(_Write(fn, what))

    def record(self, record: CallRecord) -> None:
        """Queue one call record (a lock-free queue put, no I/O on the caller's thread)."""
        if self._closed:
            logger.warning("call record dropped: store already closed")
            return
        self._queue.put(record)

    async def flush(self) -> None:
        """Wait until every write queued so far is committed (or dropped)."""
        await self.call(lambda db: None, "pending writes")

    def close(self) -> None:
        """Write what is queued, close the connection and join the thread (bounded). Idempotent, blocking."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(_CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            logger.error("store thread did not finish within %.0f s; some call records may be lost", _CLOSE_TIMEOUT_S)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop; shielded so shutdown's cancellation cannot skip it."""
        import anyio

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)


@contextmanager
def _immediate(db: sqlite_utils.Database) -> Iterator[None]:
    """A write transaction that takes SQLite's write lock as it begins, waiting up to the busy timeout for it:
    a deferred one (sqlite-utils' ``atomic()``) that read first fails at its first write, without waiting, when
    another connection (a short command beside the server) wrote meanwhile (``SQLITE_BUSY``;
    https://www.sqlite.org/lang_transaction.html#deferred_immediate_and_exclusive_transactions)."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()  # a no-op when the error already ended the transaction
        raise
    try:
        db.conn.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise


def _import_sqlite_utils() -> None:
    import sqlite_utils  # noqa: F401 - what the store's thread needs before its first use


def _explained(path: str, exc: BaseException) -> BaseException:
    """``exc``, or the read-only file system behind SQLite's bare "unable to open database file"."""
    if path == ":memory:" or condition_of(exc) not in ("cannot open", "read-only", "error"):
        return exc
    try:
        read_only = bool(os.statvfs(Path(path).parent).f_flag & os.ST_RDONLY)
    except OSError:
        return exc
    return OSError(errno.EROFS, "the file system is read-only") if read_only else exc


def _translated(exc: BaseException, what: str, *, write: bool,
                failures: tuple[type[BaseException], ...] = _FAILURES) -> BaseException:
    """A storage failure as :class:`StorageError`; anything else (a bug) as it is, for its traceback."""
    return StorageError.of(exc, what, write=write) if isinstance(exc, failures) else exc
