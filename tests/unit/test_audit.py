"""The audit trail: a run with an approval and a guardrail redaction shows its whole lineage through
``audit://runs/{id}`` (who started it, what each step saw and produced, which model answered, the redaction, who
approved and why), and ``audit export --format jsonl`` has every step of it with the actor named; changes to
workflows and patterns are audited; the trail cannot be edited, not even in the database."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from server.app import audit_cli, keys_cli
from server.app.assembly import build_server, open_dependencies, open_store
from server.dependencies import Dependencies
from server.operations.audit import digest
from server.security import Principal
from server.security.verifiers import ApiKeyVerifier
from server.store import StorageError
from server.store.sqlite import SQLiteStore
from server.workflows.service import WorkflowService
from tests.fakes import fake_config, fake_entry, fleet_for

pytestmark = pytest.mark.anyio
REVIEW = {"name": "review", "inputs": {"type": "object", "properties": {"author": {"type": "string"}}},
          "steps": [
              {"id": "ask", "kind": "orchestrate",
               "with": {"prompt": "Review the change by {{ inputs.author }}; contact ada@example.com"}},
              {"id": "gate", "kind": "approval", "depends_on": ["ask"], "with": {"timeout_s": 600}},
              {"id": "publish", "kind": "orchestrate", "depends_on": ["gate"],
               "with": {"prompt": "Publish: {{ steps.ask.output.text }}"}}],
          "outputs": {"review": "{{ steps.ask.output.text }}"}}


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    with anyio.fail_after(30):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def reviewed_run(client: Client) -> str:
    """Save and run the review workflow, approve its gate with a comment, and return the finished run's id."""
    await call(client, "save_workflow", definition=REVIEW)
    run_id = (await call(client, "run_workflow", workflow="review", inputs={"author": "Ada"}, wait=False))["run_id"]
    with anyio.fail_after(20):
        while (await call(client, "workflow_run", run_id=run_id))["status"] != "waiting":
            await anyio.sleep(0.01)  # bounded-wait: the run's status, read by request; fail_after bounds it
    await call(client, "workflow_run", run_id=run_id, action="approve", comment="ship it")
    with anyio.fail_after(20):
        while (done := await call(client, "workflow_run", run_id=run_id))["status"] in ("running", "waiting"):
            await anyio.sleep(0.01)  # bounded-wait: the run's status, read by request; fail_after bounds it
    assert done["status"] == "completed", done
    return run_id


async def cli_key(database: Path, name: str, role: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """``keys create NAME --role ROLE`` on ``database``: the key (printed once) and its id (from the notice)."""
    create = argparse.Namespace(action="create", name=name, role=role, expires_in_days=None)
    assert await anyio.to_thread.run_sync(keys_cli.run, create, database) == 0  # the command runs its own loop
    printed = capsys.readouterr()
    notice = re.search(rf"key ([0-9a-f]+) \({role}\) created", printed.err)
    assert notice, printed.err
    return printed.out.strip(), notice.group(1)


async def principal_of(deps: Dependencies, key: str) -> Principal:
    """The principal an API key authenticates as (the HTTP transports' verifier over the server's store)."""
    access = await ApiKeyVerifier(deps.store.keys, cache_s=0).verify_token(key)
    assert access is not None
    return access.claims["principal"]


async def until_waiting(workflows: WorkflowService, run_id: str, caller: Principal) -> None:
    """Wait (bounded) on the tracker's change events until the run shows an approval waiting."""
    with anyio.fail_after(20):
        while True:
            changed = workflows.tracker.changed(run_id)
            if (await workflows.status(run_id, caller)).status == "waiting":
                return
            await changed.wait()


async def test_a_run_shows_its_whole_lineage_and_the_export_names_every_step_and_actor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user key's principal starts the run and an admin key's approves it: each is named where it belongs."""
    config = fake_config(fake_entry("alpha", model="a-1"), guardrails={"redact_pii": True})
    database = tmp_path / "state.db"
    alice_key, _ = await cli_key(database, "alice", "user", capsys)
    ops_key, _ = await cli_key(database, "ops", "admin", capsys)
    async with open_dependencies(config, store_factory=lambda: open_store(database),
                                 provider_factory=fleet_for(config)) as deps:
        alice, ops = await principal_of(deps, alice_key), await principal_of(deps, ops_key)
        assert (alice.role, ops.role) == ("user", "admin") and alice.id != ops.id
        workflows = deps.workflows
        assert workflows is not None
        await workflows.save(REVIEW, caller=ops)
        run_id, _ = await workflows.start("review", {"author": "Ada"}, caller=alice)
        await until_waiting(workflows, run_id, alice)
        await workflows.decide(run_id, "approved", comment="ship it", caller=ops)
        with anyio.fail_after(30):
            done = await workflows.wait(run_id, 20, caller=alice)
        assert done.status == "completed", done
        async with Client(build_server(config, store_factory=lambda: open_store(database), shared=deps)) as client:
            read = await client.read_resource(f"audit://runs/{run_id}")
    lineage = json.loads(read.contents[0].text)
    assert (lineage["run_id"], lineage["workflow"], lineage["started_by"], lineage["status"]) == (
        run_id, "review", alice.id, "completed")
    assert lineage["inputs_sha256"] == digest({"author": "Ada"})
    steps = {s["step"]: s for s in lineage["steps"]}
    assert list(steps) == ["ask", "gate", "publish"]
    ask = steps["ask"]
    assert (ask["kind"], ask["status"], ask["provider"], ask["model"]) == ("orchestrate", "completed", "alpha", "a-1")
    assert ask["input_sha256"] == digest({"prompt": "Review the change by Ada; contact ada@example.com"})
    assert ask["output_sha256"] and ask["actor"] == alice.id
    assert [(g["action"], g["stage"], g["rule"]) for g in ask["guardrails"]] == [  # the e-mail address replaced
        ("redact", "input", "redact_pii"), ("allow", "output", "output_policy")]
    assert "redact" not in [g["action"] for g in steps["publish"]["guardrails"]]
    gate = steps["gate"]
    assert (gate["decision"], gate["by"], gate["actor"], gate["comment"]) == ("approved", ops.id, ops.id, "ship it")
    assert steps["publish"]["depends_on"] == ["gate"] and steps["publish"]["provider"] == "alpha"
    assert steps["publish"]["actor"] == alice.id  # the step after the gate still acts for the starter
    assert [(a["step"], a["approver"], a["decision"], a["comment"], a["role"]) for a in lineage["approvals"]] == [
        ("gate", ops.id, "approved", "ship it", "admin")]
    chart = lineage["mermaid"]
    assert chart.startswith("flowchart TD") and f"started by {alice.id}" in chart and f"approved by {ops.id}" in chart
    assert f"started by {ops.id}" not in chart and f"approved by {alice.id}" not in chart
    assert "guardrail redact" in chart and "alpha/a-1" in chart
    assert "ada@example.com" not in json.dumps(lineage)  # hashes only: [audit] content is off

    out = io.StringIO()
    code = await anyio.to_thread.run_sync(  # the command runs its own event loop
        lambda: audit_cli.run(argparse.Namespace(since="1h", format="jsonl"), config, database, out=out))
    assert code == 0
    exported = [json.loads(line) for line in out.getvalue().splitlines()]
    of_run = [e for e in exported if e["subject"] == run_id]
    actions = [e["action"] for e in of_run if not e["action"].startswith("guardrail.")]
    assert (actions[0], actions[-1]) == ("run.started", "run.finished")
    assert sorted(actions[1:-1]) == ["approval.decided", "step.finished", "step.finished", "step.finished"]
    assert "guardrail.redact" in [e["action"] for e in of_run]
    assert {e["step"] for e in of_run if e["action"] == "step.finished"} == {"ask", "gate", "publish"}
    actors = {(e["action"], e["step"]): e["actor"] for e in of_run if not e["action"].startswith("guardrail.")}
    assert actors == {("run.started", None): alice.id, ("step.finished", "ask"): alice.id,
                      ("approval.decided", "gate"): ops.id, ("step.finished", "gate"): ops.id,
                      ("step.finished", "publish"): alice.id, ("run.finished", None): alice.id}
    assert {e["actor"] for e in of_run if e["action"].startswith("guardrail.")} == {alice.id}  # the starter's calls
    assert [e["seq"] for e in exported] == sorted(e["seq"] for e in exported)
    saved = [e for e in exported if e["action"] == "workflow.saved"]
    assert [(e["subject"], e["actor"], e["detail"]["version"]) for e in saved] == [("workflow:review", ops.id, 1)]


async def test_key_changes_are_audited_by_key_id_and_never_with_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "state.db"
    key, key_id = await cli_key(database, "ci-bot", "user", capsys)
    revoke = argparse.Namespace(action="revoke", key_id=key_id)
    assert await anyio.to_thread.run_sync(keys_cli.run, revoke, database) == 0
    unknown = argparse.Namespace(action="revoke", key_id="0123456789ab")  # revokes nothing: audits nothing
    assert await anyio.to_thread.run_sync(keys_cli.run, unknown, database) == 1
    out = io.StringIO()
    code = await anyio.to_thread.run_sync(
        lambda: audit_cli.run(argparse.Namespace(since="1h", format="jsonl"), fake_config(), database, out=out))
    assert code == 0
    exported = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["action"], e["actor"], e["subject"]) for e in exported] == [
        ("key.created", "local", f"key:{key_id}"), ("key.revoked", "local", f"key:{key_id}")]
    assert exported[0]["detail"] == {"name": "ci-bot", "role": "user"}
    assert key.startswith("aiom_") and key not in out.getvalue()
    assert key[len("aiom_") + len(key_id):] not in out.getvalue()  # not even the key's secret part
    store = SQLiteStore(database)
    try:
        rows = await store.database.call(lambda db: [list(r) for r in db.execute("SELECT * FROM audit")], "a read")
        hashes = await store.database.call(lambda db: [r[0] for r in db.execute("SELECT key_hash FROM api_keys")],
                                           "a read")
    finally:
        await store.aclose()
    assert len(rows) == 2 and key not in json.dumps(rows, default=str)  # nor anywhere in the stored rows
    assert hashes and not any(h in json.dumps(rows, default=str) for h in hashes)  # nor its stored hash


async def test_content_is_kept_only_when_the_operator_opts_in(tmp_path: Path) -> None:
    config = fake_config(fake_entry("alpha", model="a-1"), audit={"content": True})
    database = tmp_path / "state.db"
    async with Client(build_server(config, store_factory=lambda: open_store(database),
                                   provider_factory=fleet_for(config))) as client:
        run_id = await reviewed_run(client)
        lineage = json.loads((await client.read_resource(f"audit://runs/{run_id}")).contents[0].text)
    started = next(e for e in lineage["entries"] if e["action"] == "run.started")
    assert started["content"] == {"inputs": {"author": "Ada"}}
    ask = next(e for e in lineage["entries"] if e["step"] == "ask" and e["action"] == "step.finished")
    assert ask["content"]["inputs"] == {"prompt": "Review the change by Ada; contact ada@example.com"}
    assert ask["content"]["outputs"]["provider"] == "alpha"


async def test_the_trail_cannot_be_edited_even_in_the_database(tmp_path: Path) -> None:
    from server.store import AuditEntry

    store = SQLiteStore(tmp_path / "state.db")
    try:
        await store.audit.append_audit([AuditEntry(id="e", ts=1.0, actor="key:a", action="run.started",
                                                   subject="run-1")])
        with pytest.raises(StorageError):
            await store.database.call(lambda db: db.execute("UPDATE audit SET actor = 'key:b'"), "an edit",
                                      write=True)
        assert [e.actor for e in await store.audit.audit_of("run-1")] == ["key:a"]
    finally:
        await store.aclose()


def test_the_export_refuses_a_since_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert audit_cli.parse_since("2026-12-01T00:00:00Z", 0.0) == 1_796_083_200.0
    assert audit_cli.parse_since("90m", 10_000.0) == 10_000.0 - 5400
    code = audit_cli.run(argparse.Namespace(since="yesterday-ish", format="jsonl"), fake_config(), "unused.db")
    assert code == 2 and "give a time" in capsys.readouterr().err


async def test_pattern_and_agent_changes_are_audited_once_per_new_version(tmp_path: Path) -> None:
    config = fake_config(fake_entry("alpha", model="a-1"))
    database = tmp_path / "state.db"
    async with Client(build_server(config, store_factory=lambda: open_store(database),
                                   provider_factory=fleet_for(config))) as client:
        for _ in range(2):  # the second registration is identical: no new version, no new entry
            await call(client, "register_pattern", name="greet", template="Hello {{ who }}", description="A greeting.")
            await call(client, "register_agent", name="critic", agent={"description": "Finds flaws."})
        await call(client, "register_agent", name="critic", agent={"description": "Finds every flaw."})
    store = SQLiteStore(database)
    try:
        patterns = await store.audit.audit_of("pattern:greet")
        agents = await store.audit.audit_of("agent:critic")
    finally:
        await store.aclose()
    assert [(e.action, e.actor) for e in patterns] == [("pattern.registered", "local")]
    assert [e.action for e in agents] == ["agent.registered", "agent.registered"]
    assert agents[-1].output_sha256 == digest({"agent": {"description": "Finds every flaw."}})
