"""Full mode keeps its heavy imports off the start-up path: up to the first ``tools/list`` reply a server
imports no provider SDK, no OpenTelemetry SDK, no DBOS, no plotting library (they load on first use); and with a
current tool schema cache, no tool module and not the workflow engine either. The cyclic garbage collector
is paused while the server is built and resumes, tuned and with what start-up built frozen (server.app.gc_tuning),
before it serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.import_audit import BOOTSTRAP, foreign_modules, read_audit
from tests.serving import server_env

HEAVY = {"openai", "anthropic", "opentelemetry-sdk", "dbos", "matplotlib", "numpy"}
LOADED_AT_FIRST_USE = ("tools.orchestrate", "tools.consensus", "tools.monitor", "tools.patterns", "tools.providers",
                       "tools.workflows", "server.workflows.service", "server.workflows.interpreter",
                       "server.workflows.model", "server.pool.orchestration", "server.consensus.service", "server.consensus.aggregation",
                       "server.operations.summary", "knowledge.copilot")
"""Modules a start-up with a current tool schema cache does without (see tools._lazy, server.workflows.lazy)."""
MESSAGES = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize",
     "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]


def audited_start(tmp_path: Path, *args: str, bootstrap: str = BOOTSTRAP) -> dict[str, str | None]:
    """The modules a server started with ``args`` imported up to its first ``tools/list`` reply (and its exit),
    as ``bootstrap`` writes them to ``$IMPORT_AUDIT_FILE``."""
    config = tmp_path / "config.toml"
    config.write_text('[[providers]]\nname = "gpt"\nkind = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
                      '[[providers]]\nname = "claude"\nkind = "anthropic"\nmodel = "m"\nbase_url = "http://127.0.0.1:9"\n')
    audit = tmp_path / "imports.json"
    process = subprocess.Popen(
        [sys.executable, "-c", bootstrap, "--config", str(config), "--database", str(tmp_path / "s.db"), *args],
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
    return read_audit(audit)


def test_full_mode_start_up_imports_no_sdk_tracing_workflow_engine_or_plotting(tmp_path: Path) -> None:
    owners = set(foreign_modules(audited_start(tmp_path), allowed=set()).values())
    assert "sqlite-utils" in owners  # the full-mode store: it is imported (the audit sees full-mode imports)
    assert owners.isdisjoint(HEAVY), sorted(owners & HEAVY)


def test_a_warm_start_imports_no_tool_module_and_no_workflow_engine(tmp_path: Path) -> None:
    import tools

    tools.all_tools()  # fills the session's schema cache (the subprocess shares it), if no test did yet
    modules = audited_start(tmp_path, "--simple")
    assert "tools._lazy" in modules and "server.workflows.lazy" in modules
    loaded = sorted(m for m in modules if m.startswith(LOADED_AT_FIRST_USE))
    assert not loaded, loaded


COLLECTOR_BOOTSTRAP = """\
import atexit, gc, json, os, sys
def _dump():
    with open(os.environ["IMPORT_AUDIT_FILE"], "w") as handle:
        json.dump({"frozen": gc.get_freeze_count(), "collecting": gc.isenabled(),
                   "thresholds": gc.get_threshold()}, handle)
atexit.register(_dump)
from server.app.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_the_collector_resumes_tuned_with_the_start_up_objects_frozen(tmp_path: Path) -> None:
    from server.app.gc_tuning import THRESHOLDS

    state = audited_start(tmp_path, "--simple", bootstrap=COLLECTOR_BOOTSTRAP)
    assert state["frozen"] > 10_000 and state["collecting"] and tuple(state["thresholds"]) == THRESHOLDS
