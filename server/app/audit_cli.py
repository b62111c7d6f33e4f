"""``ai-orchestration-mcp audit export --since … --format jsonl``: the audit trail as JSON lines on stdout."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from server.config import Config

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``audit`` subcommand."""
    audit = sub.add_parser("audit", help="export the audit trail")
    actions = audit.add_subparsers(dest="action", metavar="{export}", required=True)
    export = actions.add_parser("export", parents=[common], help="print every audit entry since a time, one JSON "
                                                                 "object a line, in the order appended")
    export.add_argument("--since", required=True,
                        help="a time (ISO 8601, UTC unless it says otherwise, or Unix seconds) or a duration back "
                             "from now (90m, 24h, 7d)")
    export.add_argument("--format", choices=["jsonl"], default="jsonl")


def parse_since(text: str, now: float) -> float:
    """Unix seconds from ``--since``.

    Raises:
        ValueError: neither a time nor a duration (the message says what is accepted).
    """
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: give a time (2026-12-01, 2026-12-01T09:00:00+01:00, Unix seconds) or "
                         "a duration back from now (90m, 24h, 7d)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def run(args: argparse.Namespace, config: Config, db_path: Path | Any, out: TextIO | None = None) -> int:
    """Carry out ``audit export``. Returns the exit code (2: a bad ``--since`` or a storage error)."""
    import anyio

    from server.app.assembly import open_store
    from server.operations.audit import AuditLog
    from server.store import StorageError

    out = out or sys.stdout
    try:
        since = parse_since(args.since, time.time())
    except ValueError as exc:
        print(f"audit export: {exc}", file=sys.stderr)  # cli-output (stderr)
        return 2

    async def main() -> int:
        store = open_store(db_path, command=True)
        try:
            async for line in AuditLog(store.audit).export(since):
                print(line, file=out)  # cli-output
            return 0
        except StorageError as exc:
            print(f"audit export: {exc}", file=sys.stderr)  # cli-output (stderr)
            return 2
        finally:
            await store.aclose()

    return anyio.run(main)
