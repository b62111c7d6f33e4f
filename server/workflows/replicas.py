"""Replicas on one PostgreSQL database: who is alive, and who runs the runs of a replica that died.

Each replica has a stable, unique id, which is also its DBOS executor id (DBOS records which executor runs each
workflow). Liveness is PostgreSQL's, nothing of ours: a replica holds a session-level advisory lock on its id
(:func:`server.store.postgres_locks.lock_key`) for as long as it runs, and PostgreSQL releases the lock when the
session ends, a SIGKILLed process's included.

- **Start**: :func:`hold_replica_id` takes the lock, waiting at most ``wait_s`` (a survivor may be holding it for
  a moment while it takes over); a live process with the same id keeps it, and the new one is refused.
  DBOS's launch then recovers this id's own pending runs (DBOS does that for its executor id).
- **Takeover**: :meth:`Replica.watch` looks, every ``interval_s``, at the ids that own pending runs
  (``DBOS.list_workflows``). Whoever acquires a vanished id's lock lists that id's pending runs and resumes them
  with DBOS's public ``resume_workflow`` (:func:`recover_runs`): they go back on the run queue, any replica with
  capacity executes them, and DBOS replays their recorded steps (a step whose result was recorded is not run
  again). The lock is let go at once, so the replica can come back under its id.
- **By hand**: ``ai-orchestration-mcp workflows recover --from REPLICA`` does the same through ``DBOSClient``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any, Protocol

import anyio

from server.config import Config, PostgresDatabase
from server.errors import ConfigError
from server.store.postgres_locks import SessionLocks, lock_key

logger = logging.getLogger(__name__)
DEFAULT_WAIT_S = 10.0
DEFAULT_INTERVAL_S = 2.0


class ReplicaIdInUse(ConfigError):
    """Another live process holds this replica id on this database."""


class WorkflowAdmin(Protocol):
    """What recovery needs of DBOS: the ``DBOS`` class itself, or a ``DBOSClient`` (both public DBOS API)."""

    def list_workflows(self, **filters: Any) -> list[Any]: ...

    def resume_workflow(self, workflow_id: str, **options: Any) -> Any: ...


def replica_id(config: Config, environ: Mapping[str, str], override: str | None = None) -> str:
    """``--replica-id``, then ``AI_ORCHESTRATION_REPLICA_ID``, then ``[server] replica_id``, then the host name
    (stable for one machine or container; give each replica on one host its own id)."""
    import re

    chosen = override or environ.get("AI_ORCHESTRATION_REPLICA_ID") or config.server.replica_id
    if chosen is None:
        chosen = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:63] or "replica"
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", chosen):
        raise ConfigError("a replica id is 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit",
                          key="--replica-id")
    return chosen


class Replica:
    """This process's replica id, held (see the module docstring). Made by :func:`hold_replica_id`."""

    def __init__(self, database: PostgresDatabase, replica: str, locks: SessionLocks, *,
                 interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.database = database
        self.id = replica
        self.locks = locks
        self.interval_s = interval_s
        self.taken_over: list[str] = []  # run ids this replica put back on the queue

    async def watch(self, admin: WorkflowAdmin, queue_name: str) -> None:
        """Until cancelled: every ``interval_s``, check that this replica's own lock is still held, and take over
        the pending runs of every vanished replica.

        Raises:
            ReplicaLost: the lock session is gone (PostgreSQL released the id: another replica may take over this
                one's runs), so this replica must stop running workflows.
        """
        while True:
            await anyio.sleep(self.interval_s)
            if not await anyio.to_thread.run_sync(self.locks.alive):
                raise ReplicaLost(f"replica {self.id}: lost the PostgreSQL session that holds its id")
            try:
                self.taken_over += await anyio.to_thread.run_sync(self.take_over_vanished, admin, queue_name)
            except Exception:
                logger.warning("replica %s: taking over vanished replicas' runs failed", self.id, exc_info=True)

    def take_over_vanished(self, admin: WorkflowAdmin, queue_name: str) -> list[str]:
        """Resume the pending runs of every other replica whose id nobody holds. Returns the run ids resumed."""
        from server.workflows.dbos_runtime import WORKFLOW_NAME

        pending = admin.list_workflows(status="PENDING", name=WORKFLOW_NAME, load_input=False, load_output=False)
        owners = sorted({s.executor_id for s in pending if s.executor_id and s.executor_id != self.id})
        resumed: list[str] = []
        for owner in owners:
            resumed += recover_runs(admin, self.locks, owner, queue_name, wait_s=0.0)
        return resumed

    def close(self) -> None:
        """Let the id go (ends the lock session)."""
        self.locks.close()


class ReplicaLost(RuntimeError):
    """This replica's lock session ended while it ran."""


def hold_replica_id(database: PostgresDatabase, replica: str, *, wait_s: float = DEFAULT_WAIT_S,
                    interval_s: float = DEFAULT_INTERVAL_S) -> Replica:
    """Take the advisory lock on ``replica`` (blocking, at most ``wait_s``).

    Raises:
        ReplicaIdInUse: a live process holds the id.
    """
    locks = SessionLocks(database)
    if not locks.acquire(lock_key("replica", replica), wait_s):
        locks.close()
        raise ReplicaIdInUse(f"replica id {replica!r} is held by a running process on {database}; give every "
                             "replica its own --replica-id (or stop the other process)", key="--replica-id")
    logger.info("replica %s: holding its id on %s", replica, database)
    return Replica(database, replica, locks, interval_s=interval_s)


def recover_runs(admin: WorkflowAdmin, locks: SessionLocks, replica: str, queue_name: str | None, *,
                 wait_s: float = 0.0) -> list[str]:
    """If ``replica``'s id can be locked (its process is gone), resume its pending runs with DBOS's public
    ``resume_workflow`` from their last recorded step, then let the lock go. Returns the run ids resumed
    (none when the replica is alive or has no pending run).
    """
    from server.workflows.dbos_runtime import WORKFLOW_NAME

    key = lock_key("replica", replica)
    if not (locks.acquire(key, wait_s) if wait_s > 0 else locks.try_acquire(key)):
        return []
    try:
        pending = admin.list_workflows(status="PENDING", name=WORKFLOW_NAME, executor_id=replica,
                                       load_input=False, load_output=False)
        resumed = []
        for status in pending:
            admin.resume_workflow(status.workflow_id, queue_name=queue_name)
            resumed.append(status.workflow_id)
        if resumed:
            logger.warning("replica %s is gone: resumed its %d pending run(s) on the queue", replica, len(resumed))
        return resumed
    finally:
        locks.release(key)


def is_held(database: PostgresDatabase, replica: str) -> bool:
    """Whether a live process holds ``replica``'s id (for the admin command's message)."""
    locks = SessionLocks(database)
    try:
        key = lock_key("replica", replica)
        if locks.try_acquire(key):
            locks.release(key)
            return False
        return True
    finally:
        locks.close()
