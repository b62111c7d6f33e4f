"""The PostgreSQL database behind every PostgreSQL store protocol: one connection owned by one thread.

The queue discipline is the SQLite store's (:class:`server.store.sqlite_db.SQLiteDatabase`, reused as it is):
queued writes return at once and go in batches, one transaction each, every write in a savepoint of its own;
awaited writes return once committed; calls run after every write queued before them, so a read sees this
replica's earlier writes. Only the driver differs: psycopg 3 (which DBOS already installs), through
:class:`_Handle`, which gives the SQLite code's ``atomic()`` and ``conn.in_transaction`` their PostgreSQL meaning
and reconnects when the connection was lost (the database restarted).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from server.store import postgres_ops as ops_sql
from server.store.errors import STORAGE_FAILURES
from server.store.location import PostgresDatabase
from server.store.postgres_schema import migrate
from server.store.records import CallRecord
from server.store.sqlite_db import SQLiteDatabase

logger = logging.getLogger(__name__)


def connect(database: PostgresDatabase, *, autocommit: bool = True,
            application_name: str = "ai-orchestration-mcp") -> Any:
    """A psycopg connection with TCP keepalives (a dead peer is noticed within about a minute)."""
    import psycopg

    return psycopg.connect(database.url, autocommit=autocommit, application_name=application_name,
                           keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
                           connect_timeout=10)


class _Handle:
    """A psycopg connection (autocommit; transactions explicit) with what the shared queue code calls on its
    database object, reconnecting once the old connection is broken."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._connection = connect(database)

    def _live(self) -> Any:
        if self._connection.broken or self._connection.closed:
            logger.warning("the PostgreSQL connection to %s was lost; reconnecting", self._database)
            self._connection = connect(self._database)
        return self._connection

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction, or a savepoint inside the open one (psycopg nests them so)."""
        with self._live().transaction():
            yield

    transaction = atomic

    @property
    def conn(self) -> _Handle:
        return self

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._connection.info.transaction_status != TransactionStatus.IDLE

    def rollback(self) -> None:
        self._connection.rollback()

    def execute(self, sql: str, params: Any = None) -> Any:
        return self._live().execute(sql, params)

    def cursor(self) -> Any:
        return self._live().cursor()

    def close(self) -> None:
        self._connection.close()


class PostgresWorker(SQLiteDatabase):
    """The PostgreSQL database served by its own thread (see the module docstring).

    Raises:
        StoreUnavailable: the database cannot be reached or migrated (names it, without its password).
    """

    def __init__(self, database: PostgresDatabase) -> None:
        import psycopg

        self.location = database
        self.failures = (psycopg.Error, *STORAGE_FAILURES)
        super().__init__(str(database))  # the name in messages: the URL without its password

    def _connect(self) -> _Handle:
        handle = _Handle(self.location)  # migrated at once: replicas start fast enough, and fail at start
        migrate(handle)
        return handle

    def _set_up(self, conn: _Handle) -> _Handle:
        return conn

    @staticmethod
    def _transaction(db: Any) -> Any:
        """A batch's transaction (PostgreSQL takes row and advisory locks as they are needed, and waits)."""
        return db.atomic()

    @staticmethod
    def _call_transaction(db: Any) -> Any:
        """Nothing around a call that writes: its ``connection.transaction()`` is the transaction."""
        return contextlib.nullcontext()

    @staticmethod
    def _insert_calls(db: Any, records: list[CallRecord]) -> None:
        ops_sql.insert_calls(db, records)

    def _durable(self, db: Any, durable: bool) -> None:
        """Nothing to set: a PostgreSQL commit is on the disk when it returns (``synchronous_commit``' default)."""

    def _named(self, exc: BaseException) -> BaseException:
        """``exc`` as it is: PostgreSQL names its own conditions (SQLSTATE)."""
        return exc
