"""``ai-orchestration-mcp keys create|list|revoke``: API keys in the server's database."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``keys`` subcommand."""
    keys = sub.add_parser("keys", help="create, list or revoke API keys for the HTTP transports")
    actions = keys.add_subparsers(dest="action", metavar="{create,list,revoke}", required=True)
    create = actions.add_parser("create", parents=[common], help="make a key; it is printed once, stored hashed")
    create.add_argument("name", help="a label, e.g. the person or service that uses the key")
    create.add_argument("--role", choices=["user", "admin"], default="user")
    create.add_argument("--expires-in-days", type=float, default=None)
    actions.add_parser("list", parents=[common], help="list keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key by its id")
    revoke.add_argument("key_id")


def run(args: argparse.Namespace, db_path: Path | str) -> int:
    """Carry out ``keys ACTION``. Returns the exit code."""
    import anyio

    from server.app.assembly import open_store
    from server.operations.audit import AuditLog
    from server.security.keys import create_key, key_state
    from server.store import StorageError

    async def main() -> int:
        store = open_store(db_path, command=True)
        try:
            if args.action == "create":
                days = args.expires_in_days
                created = await create_key(store.keys, args.name, args.role,
                                           expires_in_s=None if days is None else days * 86_400)
                await AuditLog(store.audit).record("key.created", actor="local", subject=f"key:{created.record.id}",
                                                   detail={"name": args.name, "role": args.role})
                print(created.key, file=sys.stdout)  # cli-output
                notice = f"key {created.record.id} ({args.role}) created; store it now, it is not shown again"
                print(notice, file=sys.stderr)  # cli-output (stderr)
                return 0
            if args.action == "list":
                now = time.time()
                for record in await store.keys.list_api_keys():
                    created = datetime.fromtimestamp(record.created_at, UTC).strftime("%Y-%m-%d %H:%M")
                    print(f"{record.id}  {record.role:<5}  {key_state(record, now):<7}  {created}  "  # cli-output
                          f"{record.prefix}…  {record.name}", file=sys.stdout)
                return 0
            if await store.keys.revoke_api_key(args.key_id, time.time()):
                await AuditLog(store.audit).record("key.revoked", actor="local", subject=f"key:{args.key_id}")
                print(f"key {args.key_id} revoked", file=sys.stdout)  # cli-output
                return 0
            print(f"no active key with id {args.key_id}", file=sys.stderr)  # cli-output (stderr)
            return 1
        except (ValueError, StorageError) as exc:
            print(f"keys {args.action}: {exc}", file=sys.stderr)  # cli-output (stderr)
            return 2
        finally:
            await store.aclose()

    return anyio.run(main)
