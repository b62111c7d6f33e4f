"""Full mode keeps its heavy imports off the start-up path: up to the first ``tools/list`` reply a server
imports no provider SDK, no OpenTelemetry SDK, no DBOS, no plotting library (they load on first use)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.import_audit import BOOTSTRAP, foreign_modules, read_audit
from tests.serving import server_env

HEAVY = {"openai", "anthropic", "opentelemetry-sdk", "dbos", "matplotlib", "numpy"}
MESSAGES = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize",
     "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]


def test_full_mode_start_up_imports_no_sdk_tracing_workflow_engine_or_plotting(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[providers]]\nname = "gpt"\nkind = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
                      '[[providers]]\nname = "claude"\nkind = "anthropic"\nmodel = "m"\nbase_url = "http://127.0.0.1:9"\n')
    audit = tmp_path / "imports.json"
    process = subprocess.Popen(
        [sys.executable, "-c", BOOTSTRAP, "--config", str(config), "--database", str(tmp_path / "s.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**server_env(), "IMPORT_AUDIT_FILE": str(audit)})
    try:
        process.stdin.write("".join(json.dumps(m) + "\n" for m in MESSAGES))
        process.stdin.flush()  # stdin stays open until the reply: EOF first would end the server before it
        while (reply := json.loads(process.stdout.readline() or "null")) is not None and reply.get("id") != 2:
            pass
        assert reply is not None and reply["result"]["tools"]
        process.stdin.close()
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for stream in (process.stdin, process.stdout):
            if not stream.closed:
                stream.close()
    owners = set(foreign_modules(read_audit(audit), allowed=set()).values())
    assert "sqlite-utils" in owners  # the full-mode store: it is imported (the audit sees full-mode imports)
    assert owners.isdisjoint(HEAVY), sorted(owners & HEAVY)
