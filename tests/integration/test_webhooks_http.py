"""Webhooks on a real server process over HTTP (DBOS runtime): a signed delivery starts the saved workflow, a
redelivery starts nothing, a bad signature is 401 and a foreign Host is refused before the hook is reached; the
run is listed with the hook's principal, and its lineage names it."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client

from server.app.webhooks import signature
from tests.secure_serving import running_server, write_toml

pytestmark = pytest.mark.anyio
SECRET = "webhook-secret-0123456789abcdef"


async def test_a_signed_delivery_starts_one_run_on_a_real_server(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "config.toml", [], hooks__deploy={"workflow": "deploy", "secret_env": "DEPLOY_HOOK"})
    with running_server(config, tmp_path / "state.db", tmp_path / "server.log", env={"DEPLOY_HOOK": SECRET}) as server:
        async with Client(server.url) as client:
            saved = await client.call_tool("save_workflow", {"definition": {
                "name": "deploy", "inputs": {"type": "object", "properties": {"ref": {"type": "string"}}},
                "steps": [{"id": "wait", "kind": "approval", "with": {"timeout_s": 600}}]}})
            assert not saved.is_error, saved.content[0].text
        base = f"http://127.0.0.1:{server.port}"
        body = json.dumps({"ref": "v1.2.3"}).encode()
        headers = {"X-Hub-Signature-256": signature(SECRET, body), "X-GitHub-Delivery": "delivery-1",
                   "Content-Type": "application/json"}
        async with httpx2.AsyncClient(base_url=base, timeout=30) as http:
            first = await http.post("/hooks/deploy", content=body, headers=headers)
            again = await http.post("/hooks/deploy", content=body, headers=headers)
            forged = await http.post("/hooks/deploy", content=body,
                                     headers={**headers, "X-Hub-Signature-256": signature("guess", body)})
            foreign = await http.post("/hooks/deploy", content=body, headers={**headers, "Host": "attacker.example"})
        assert (first.status_code, again.status_code, forged.status_code, foreign.status_code) == (202, 200, 401, 421)
        assert first.json()["run_id"] == again.json()["run_id"] == "hook-deploy-delivery-1"
        with anyio.fail_after(30):
            async with Client(server.url) as client:
                listed = (await client.call_tool("workflow_run", {})).structured_content["runs"]
                runs = [r for r in listed if r["run_id"].startswith("hook-deploy-delivery-1")]
                lineage = json.loads((await client.read_resource(f"audit://runs/{runs[0]['run_id']}")).contents[0].text)
    assert len(runs) == 1
    assert lineage["started_by"] == "system:hook:deploy" and lineage["workflow"] == "deploy"
    assert SECRET not in server.log.read_text()
