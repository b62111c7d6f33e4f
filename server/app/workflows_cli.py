"""``ai-orchestration-mcp workflows recover --from REPLICA``: resume by hand the pending runs of a replica that is
gone, on a shared PostgreSQL database (what a surviving replica does by itself; see :mod:`server.workflows.replicas`).
"""

from __future__ import annotations

import argparse
import sys

from server.config import Config, DatabaseLocation, PostgresDatabase


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``workflows`` subcommand."""
    workflows = sub.add_parser("workflows", help="administer workflow runs on a shared PostgreSQL database")
    actions = workflows.add_subparsers(dest="action", metavar="{recover}", required=True)
    recover = actions.add_parser("recover", parents=[common], help="resume the pending runs of a replica that is "
                                 "gone (refused while it is alive): any live replica then runs them")
    recover.add_argument("--from", dest="from_replica", required=True, metavar="REPLICA",
                         help="the vanished replica's id")


def run(args: argparse.Namespace, config: Config, location: DatabaseLocation) -> int:
    """Carry out ``workflows ACTION``. Returns the exit code (1: refused or failed)."""
    from server.store.postgres_locks import SessionLocks
    from server.workflows.dbos_runtime import RUN_QUEUE
    from server.workflows.replicas import is_held, recover_runs

    if not isinstance(location, PostgresDatabase):
        why = ("needs a shared PostgreSQL database (--database postgresql://…); on SQLite the one server recovers its "
               "own runs when it starts")
        print(f"workflows recover: {why}", file=sys.stderr)  # cli-output (stderr)
        return 1
    if is_held(location, args.from_replica):
        why = f"replica {args.from_replica!r} is alive (it holds its id on {location}); its runs are its own"
        print(f"workflows recover: {why}", file=sys.stderr)  # cli-output (stderr)
        return 1
    from dbos import DBOSClient

    client = DBOSClient(system_database_url=config.workflows.system_database or location.url)
    locks = SessionLocks(location, application_name="ai-orchestration-mcp-recover")
    try:
        resumed = recover_runs(client, locks, args.from_replica, RUN_QUEUE)
    finally:
        locks.close()
        client.destroy()
    for run_id in resumed:
        print(run_id, file=sys.stdout)  # cli-output
    print(f"resumed {len(resumed)} pending run(s) of replica {args.from_replica}", file=sys.stderr)  # cli-output (stderr)
    return 0
