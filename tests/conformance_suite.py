"""The official MCP conformance suite (``@modelcontextprotocol/conformance``, Node 22) as the tests run it: where
``scripts/install-conformance.sh`` put it, and one scenario against a server URL.

Outside CI a missing suite skips the test; in CI (``CI`` set) it is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def installed_suite(variable: str, folder: str, install: str) -> Path:
    """The suite's ``mcp-conformance`` (``$variable``, else ``.cache/<folder>``); skips (fails in CI) without it,
    naming the ``install`` command."""
    configured = os.environ.get(variable)
    path = Path(configured) if configured else REPO / ".cache" / folder / "bin" / "mcp-conformance"
    if path.exists():
        return path
    message = f"conformance suite not found; run: {install}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_scenario(suite: Path, url: str, scenario: str, results: Path) -> list[dict]:
    """Run one server ``scenario`` against ``url``; returns its checks (each with ``id`` and ``status``), which the
    suite writes to ``checks.json`` under ``results``. Fails when it wrote none."""
    out = subprocess.run([str(suite), "server", "--url", url, "--scenario", scenario, "-o", str(results)],
                         capture_output=True, text=True, timeout=180)
    checks = [check for path in results.rglob("checks.json") for check in json.loads(path.read_text())]
    assert checks, out.stdout + out.stderr
    return checks
