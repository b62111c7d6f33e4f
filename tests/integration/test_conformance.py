"""The official MCP conformance suite (a peer's test suite, Node 22) against the server over HTTP.

`scripts/install-conformance.sh` installs it into `.cache/conformance` (scripts/test.sh runs it first and
exports MCP_CONFORMANCE). Outside CI a missing suite skips these tests; in CI it is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from server.simulator import Upstream
from tests.conftest import provider_entry
from tests.secure_serving import running_server, write_toml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def conformance() -> Path:
    configured = os.environ.get("MCP_CONFORMANCE")
    path = Path(configured) if configured else REPO / ".cache" / "conformance" / "bin" / "mcp-conformance"
    if path.exists():
        return path
    message = "conformance suite not found; run: bash scripts/install-conformance.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_dns_rebinding_protection_scenario_passes_on_loopback(conformance: Path, tmp_path: Path,
                                                              upstream: Upstream) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")])
    with running_server(config, tmp_path / "s.db", tmp_path / "server.log") as server:
        out = subprocess.run([str(conformance), "server", "--url", server.url, "--scenario",
                              "dns-rebinding-protection", "-o", str(tmp_path / "results")],
                             capture_output=True, text=True, timeout=120)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    checks = [check for path in (tmp_path / "results").rglob("*.json") for check in json.loads(path.read_text())
              if isinstance(check, dict) and "status" in check]
    assert len(checks) >= 2, report
    assert {c["id"]: c["status"] for c in checks} == {c["id"]: "SUCCESS" for c in checks}, report
