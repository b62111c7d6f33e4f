"""Webhooks (``POST /hooks/{name}``), in process through httpx2's ASGI transport: a valid HMAC signature starts a
run with the body as inputs, a bad one gets 401, the same delivery id twice starts one run, an oversize body gets
413, a foreign Host or Origin is refused as on ``/mcp``; API-key hooks take a bearer key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest

from server.app.transports import security_settings
from server.app.webhooks import hooks_mounter, signature
from server.config import Config
from server.store.memory import MemoryStore
from server.workflows import StepServices, open_workflows
from server.workflows.service import WorkflowService

pytestmark = pytest.mark.anyio
SECRET = "hook-secret-for-tests-0123456789"
DEFINITION = {"name": "triage", "inputs": {"type": "object", "properties": {"issue": {"type": "integer"}},
                                           "required": ["issue"]},
              "steps": [{"id": "gate", "kind": "approval", "with": {"timeout_s": 600}}]}


class Keys:
    """A bearer verifier that knows one key."""

    async def verify_token(self, token: str) -> Any:
        return object() if token == "good-key" else None


@pytest.fixture
async def service() -> AsyncIterator[WorkflowService]:
    async with open_workflows(StepServices(), MemoryStore()) as workflows:
        await workflows.save(DEFINITION)
        yield workflows


def app(workflows: WorkflowService, **hook: Any) -> Any:
    config = Config.model_validate({"hooks": {
        "issues": {"workflow": "triage", "secret_env": "ISSUES_SECRET", "max_body_bytes": 1024, **hook},
        "keyed": {"workflow": "triage", "auth": "api_key"}}})
    config = config.model_copy(update={"hooks": {
        **config.hooks, "issues": config.hooks["issues"].model_copy(update={"secret": _secret()})}})
    deps = SimpleNamespace(config=config, workflows=workflows)

    async def mcp(scope: Any, receive: Any, send: Any) -> None:  # what /mcp would be
        raise AssertionError("a webhook request reached the MCP app")

    return hooks_mounter(deps, Keys())(mcp, security_settings("127.0.0.1", 8000))


def _secret() -> Any:
    from pydantic import SecretStr

    return SecretStr(SECRET)


def client(asgi: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=asgi), base_url="http://127.0.0.1:8000")


def signed(body: bytes, delivery: str = "d-1", **headers: str) -> dict[str, str]:
    return {"X-Hub-Signature-256": signature(SECRET, body), "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json", **headers}


async def test_a_valid_signature_starts_the_workflow_with_the_body_as_inputs(service: WorkflowService) -> None:
    body = json.dumps({"issue": 7}).encode()
    async with client(app(service)) as http:
        answer = await http.post("/hooks/issues", content=body, headers=signed(body))
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    assert run_id == "hook-issues-d-1" and answer.json()["started"] is True
    runs = await service.runs.list_runs()
    assert [(r.workflow, r.owner) for r in runs] == [("triage", "system:hook:issues")]
    record = await service.runtime.get(runs[0].run_id)
    assert record is not None and record.arguments["inputs"] == {"issue": 7}


async def test_a_bad_or_missing_signature_gets_401_and_starts_nothing(service: WorkflowService) -> None:
    body = json.dumps({"issue": 7}).encode()
    async with client(app(service)) as http:
        wrong = await http.post("/hooks/issues", content=body,
                                headers=signed(body, **{"X-Hub-Signature-256": signature("other", body)}))
        tampered = await http.post("/hooks/issues", content=json.dumps({"issue": 8}).encode(), headers=signed(body))
        missing = await http.post("/hooks/issues", content=body, headers={"X-GitHub-Delivery": "d-2"})
    assert [wrong.status_code, tampered.status_code, missing.status_code] == [401, 401, 401]
    assert "X-Hub-Signature-256".lower() in wrong.json()["error"]
    assert SECRET not in wrong.text
    assert await service.runs.list_runs() == []


async def test_the_same_delivery_id_twice_starts_one_run(service: WorkflowService) -> None:
    body = json.dumps({"issue": 7}).encode()
    async with client(app(service)) as http:
        first = await http.post("/hooks/issues", content=body, headers=signed(body, "same"))
        again = await http.post("/hooks/issues", content=body, headers=signed(body, "same"))
        other_body = json.dumps({"issue": 9}).encode()
        conflict = await http.post("/hooks/issues", content=other_body, headers=signed(other_body, "same"))
        no_delivery = await http.post("/hooks/issues", content=body,
                                      headers={"X-Hub-Signature-256": signature(SECRET, body)})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["run_id"] == again.json()["run_id"] and again.json()["started"] is False
    assert conflict.status_code == 409
    assert no_delivery.status_code == 400 and "delivery id" in no_delivery.json()["error"]
    assert len(await service.runs.list_runs()) == 1


async def test_an_oversize_body_gets_413_before_it_is_read_whole(service: WorkflowService) -> None:
    body = json.dumps({"issue": 7, "pad": "x" * 2000}).encode()
    async with client(app(service)) as http:
        declared = await http.post("/hooks/issues", content=body, headers=signed(body))

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b" " * 200

        streamed = await http.post("/hooks/issues", content=chunks(), headers=signed(b""))
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert "1024 bytes" in declared.json()["error"]
    assert await service.runs.list_runs() == []


async def test_a_foreign_host_or_origin_is_refused_as_on_mcp(service: WorkflowService) -> None:
    body = json.dumps({"issue": 7}).encode()
    async with client(app(service)) as http:
        host = await http.post("/hooks/issues", content=body, headers=signed(body, Host="evil.example"))
        origin = await http.post("/hooks/issues", content=body, headers=signed(body, Origin="http://evil.example"))
    assert (host.status_code, origin.status_code) == (421, 403)
    assert await service.runs.list_runs() == []


async def test_an_api_key_hook_takes_a_bearer_key_and_unknown_hooks_are_404(service: WorkflowService) -> None:
    body = json.dumps({"issue": 3}).encode()
    async with client(app(service)) as http:
        refused = await http.post("/hooks/keyed", content=body,
                                  headers={"Authorization": "Bearer bad", "X-Hook-Delivery": "k1"})
        accepted = await http.post("/hooks/keyed", content=body,
                                   headers={"Authorization": "Bearer good-key", "X-Hook-Delivery": "k1"})
        unknown = await http.post("/hooks/nope", content=body, headers=signed(body))
        not_json = await http.post("/hooks/keyed", content=b"[1, 2]",
                                   headers={"Authorization": "Bearer good-key", "X-Hook-Delivery": "k2"})
        bad_inputs = await http.post("/hooks/keyed", content=b"{}",
                                     headers={"Authorization": "Bearer good-key", "X-Hook-Delivery": "k3"})
    assert (refused.status_code, accepted.status_code, unknown.status_code) == (401, 202, 404)
    assert not_json.status_code == 400 and "JSON object" in not_json.json()["error"]
    assert bad_inputs.status_code == 422 and "issue" in bad_inputs.json()["error"]
    assert [r.owner for r in await service.runs.list_runs()] == ["system:hook:keyed"]
