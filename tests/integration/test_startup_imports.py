"""Warm start and the entry point's process settings, on a real server process over stdio.

- Full mode answers first and warms afterwards: once it has answered, it imports in the background the provider
  SDKs of the configured kinds (and only those) and launches DBOS, and says so on stderr.
- The entry point keeps sqlite-utils from importing numpy, and the collector resumes tuned, with what start-up
  built and what the warm start imported frozen (server.app.process_settings).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.import_audit import foreign_modules
from tests.serving import server_env

MESSAGES = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize",
     "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]
BOOTSTRAP = """\
import atexit, gc, json, os, sys
_before = set(sys.modules)
def _dump():
    with open(os.environ["IMPORT_AUDIT_FILE"], "w") as handle:
        json.dump({"modules": {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
                               if name not in _before},
                   "frozen": gc.get_freeze_count(), "collecting": gc.isenabled(),
                   "thresholds": gc.get_threshold()}, handle)
atexit.register(_dump)
from server.app.cli import main
raise SystemExit(main(sys.argv[1:]))
"""
OPENAI = '[[providers]]\nname = "gpt"\nkind = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
ANTHROPIC = '[[providers]]\nname = "claude"\nkind = "anthropic"\nmodel = "m"\nbase_url = "http://127.0.0.1:9"\n'


def warm_start(tmp_path: Path, config: str, *args: str) -> tuple[dict, list[str]]:
    """Start a server, list its tools, wait (bounded) for its warm start to report, close stdin; returns what the
    process recorded at exit and its stderr lines."""
    config_file = tmp_path / "config.toml"
    config_file.write_text(config)
    audit = tmp_path / "audit.json"
    process = subprocess.Popen(
        [sys.executable, "-c", BOOTSTRAP, "--config", str(config_file), "--database", str(tmp_path / "s.db"), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**server_env(), "IMPORT_AUDIT_FILE": str(audit)})
    lines: list[str] = []
    try:
        process.stdin.write("".join(json.dumps(m) + "\n" for m in MESSAGES))
        process.stdin.flush()
        while (reply := json.loads(process.stdout.readline() or "null")) is not None and reply.get("id") != 2:
            pass
        assert reply is not None and reply["result"]["tools"]
        while "warm start:" not in (line := process.stderr.readline()):  # bounded by the pytest timeout
            assert line, "the server exited before its warm start reported"
            lines.append(line)
        lines.append(line)
        process.stdin.close()
        lines += process.stderr.read().splitlines()
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for stream in (process.stdin, process.stdout, process.stderr):
            if not stream.closed:
                stream.close()
    return json.loads(audit.read_text()), lines


def test_full_mode_warms_the_configured_sdks_and_dbos_after_answering(tmp_path: Path) -> None:
    recorded, lines = warm_start(tmp_path, OPENAI + ANTHROPIC)
    owners = set(foreign_modules(recorded["modules"], allowed=set()).values())
    assert {"openai", "anthropic", "dbos"} <= owners, sorted(owners)
    assert "numpy" not in owners and "sqlite-utils" in owners  # the store came without numpy
    report = next(line for line in lines if "warm start:" in line)
    assert "provider gpt" in report and "provider claude" in report and "workflow runtime" in report


def test_the_warm_start_imports_only_the_sdks_of_the_configured_kinds(tmp_path: Path) -> None:
    recorded, _ = warm_start(tmp_path, OPENAI + '[workflows]\nruntime = "memory"\n')
    owners = set(foreign_modules(recorded["modules"], allowed=set()).values())
    assert "openai" in owners and "anthropic" not in owners and "dbos" not in owners, sorted(owners)


def test_the_collector_resumes_tuned_with_start_up_and_warm_start_objects_frozen(tmp_path: Path) -> None:
    from server.app.process_settings import THRESHOLDS

    cold, _ = warm_start(tmp_path, '[workflows]\nruntime = "memory"\n')  # nothing to warm
    (tmp_path / "s.db").unlink()
    warm, _ = warm_start(tmp_path, OPENAI + ANTHROPIC + '[workflows]\nruntime = "memory"\n')
    for state in (cold, warm):
        assert state["collecting"] and tuple(state["thresholds"]) == THRESHOLDS
    assert cold["frozen"] > 10_000
    assert warm["frozen"] > cold["frozen"] + 10_000  # the SDKs' modules, frozen once the warm start imported them


def test_tune_for_serving_raises_thresholds_and_freezes_what_is_alive() -> None:
    script = ("import gc, json\nimport server.app.assembly\nfrom server.app.process_settings import tune_for_serving\n"
              "before = gc.get_freeze_count()\ntune_for_serving()\n"
              "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=server_env()).stdout
    before, after, thresholds = json.loads(out)
    assert before == 0 and after > 10_000 and thresholds == [10_000, 20, 20]
