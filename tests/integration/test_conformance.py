"""The official MCP conformance suite (a peer's test suite, Node 22) against the server over HTTP.

`scripts/install-conformance.sh` installs it into `.cache/conformance` (scripts/test.sh runs it first and
exports MCP_CONFORMANCE). Outside CI a missing suite skips these tests; in CI it is a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from server.simulator import Upstream
from tests.conformance_suite import installed_suite, run_scenario
from tests.conftest import provider_entry
from tests.secure_serving import running_server, write_toml


@pytest.fixture(scope="module")
def conformance() -> Path:
    return installed_suite("MCP_CONFORMANCE", "conformance", "bash scripts/install-conformance.sh")


def test_dns_rebinding_protection_scenario_passes_on_loopback(conformance: Path, tmp_path: Path,
                                                              upstream: Upstream) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")])
    with running_server(config, tmp_path / "s.db", tmp_path / "server.log") as server:
        checks = run_scenario(conformance, server.url, "dns-rebinding-protection", tmp_path / "results")
    assert len(checks) >= 2, checks
    assert {c["id"]: c["status"] for c in checks} == {c["id"]: "SUCCESS" for c in checks}, checks
