"""The MCP Inspector CLI (a real MCP client, Node 22) against the installed console script.

`scripts/install-inspector.sh` installs the Inspector into `.cache/inspector`; the test command in the
README runs it first. Outside CI a missing Inspector skips these tests; in CI it is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from server.simulator import Behaviour, Upstream

REPO = Path(__file__).resolve().parents[2]


def _require(path: Path | None, what: str) -> Path:
    if path is not None and path.exists():
        return path
    message = f"{what} not found; run: bash scripts/install-inspector.sh (and pip install the project)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def inspector() -> Path:
    configured = os.environ.get("MCP_INSPECTOR")
    return _require(Path(configured) if configured else REPO / ".cache" / "inspector" / "bin" / "mcp-inspector",
                    "MCP Inspector")


@pytest.fixture(scope="module")
def console_script() -> Path:
    found = shutil.which("ai-orchestration-mcp", path=str(Path(sys.executable).parent))
    return _require(Path(found) if found else None, "installed ai-orchestration-mcp console script")


def run_inspector(inspector: Path, console_script: Path, config_file: Path, database: Path, *method: str) -> dict:
    # The Inspector has a --config of its own: its options go first, the server command after "--".
    command = [str(inspector), "--cli", *method, "--", str(console_script), "--config", str(config_file),
               "--database", str(database)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr[-3000:]}"
    return json.loads(out.stdout)


def test_inspector_lists_tools_and_gets_the_upstream_answer(
    inspector: Path, console_script: Path, config_file: Path, tmp_path: Path, upstream: Upstream
) -> None:
    database = tmp_path / "inspector.db"
    listed = run_inspector(inspector, console_script, config_file, database, "--method", "tools/list")
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert {"orchestrate", "monitor_operations"} <= set(tools)
    assert tools["orchestrate"]["annotations"]["openWorldHint"] is True

    answered = run_inspector(inspector, console_script, config_file, database, "--method", "tools/call",
                             "--tool-name", "orchestrate", "--tool-arg", "prompt=hello from the inspector")
    assert answered["isError"] is False
    assert answered["structuredContent"]["text"] == "[gpt-sim] hello from the inspector"
    assert answered["structuredContent"]["provider"] == "primary"

    upstream.script("gpt-sim", Behaviour(status=500))
    fallback = run_inspector(inspector, console_script, config_file, database, "--method", "tools/call",
                             "--tool-name", "orchestrate", "--tool-arg", "prompt=first one fails")
    result = fallback["structuredContent"]
    assert result["text"] == "[claude-sim] first one fails"
    assert [(a["provider"], a["status"]) for a in result["attempts"]] == [("primary", "error"), ("backup", "ok")]

    monitor = run_inspector(inspector, console_script, config_file, database, "--method", "tools/call",
                            "--tool-name", "monitor_operations", "--tool-arg", "window=15m")
    groups = {g["key"]: g for g in monitor["structuredContent"]["groups"]}
    assert (groups["primary"]["calls"], groups["primary"]["errors"]) == (2, 1)
    assert (groups["backup"]["calls"], groups["backup"]["errors"]) == (1, 0)
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 3


def test_inspector_strict_tools_list_reports_no_errors_and_warns_only_on_documented_free_form_fields(
    inspector: Path, console_script: Path, config_file: Path, tmp_path: Path
) -> None:
    command = [str(inspector), "--cli", "--method", "tools/list", "--strict", "--", str(console_script),
               "--config", str(config_file), "--database", str(tmp_path / "strict.db")]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"exit {out.returncode}\nstderr: {out.stderr[-3000:]}"
    findings = [line for line in out.stderr.splitlines() if line.startswith(("Error:", "Warning:"))]
    paths = [line.split("Path: ", 1)[1] for line in out.stderr.splitlines() if line.strip().startswith("Path: ")]
    assert not [f for f in findings if f.startswith("Error:")], out.stderr
    assert paths == ["inputSchema.properties.variables.items.properties.default"] * len(paths), out.stderr
    assert len(findings) <= 1, findings  # register_pattern's variable default: any JSON value, as documented


def test_the_readme_pins_the_inspector_version_the_install_script_installs() -> None:
    import re

    pinned = re.search(r'INSPECTOR_VERSION="([^"]+)"', (REPO / "scripts" / "install-inspector.sh").read_text())
    assert pinned is not None
    shown = re.findall(r"npx -y @modelcontextprotocol/inspector(\S*)", (REPO / "README.md").read_text())
    assert shown and set(shown) == {f"@{pinned.group(1)}"}, shown
