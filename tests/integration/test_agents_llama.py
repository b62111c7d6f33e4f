"""Agents against a real OpenAI-compatible server: llama.cpp's (llama-cpp-python[server]) with SmolLM2-135M-Instruct,
both installed by ``scripts/install-llama.sh`` (which ``scripts/test.sh`` calls; ``LLAMA_PYTHON`` and
``LLAMA_GGUF`` point at them). Routing between two agents and planning a two-step workflow through the real
wire protocol and JSON mode; nothing is asserted on the model's wording: the route is one of the two agents (by
the model, or by the fallback when its reply does not fit), and the plan validates or the planner's failure says
why. Skipped when they are not installed, failed instead when ``CI`` is set."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.config import Config
from server.store.memory import MemoryStore
from server.workflows.validation import validate
from tests.serving import free_port, wait_for_port

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python, gguf = os.environ.get("LLAMA_PYTHON", ""), os.environ.get("LLAMA_GGUF", "")
    if not (Path(python).is_file() and Path(gguf).is_file()):
        message = "llama.cpp's server or the SmolLM2 GGUF is missing; run: bash scripts/install-llama.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log = (tmp_path_factory.mktemp("llama") / "server.log").open("w")  # a file: a full pipe would stall the server
    process = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "smollm2",
                                "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2"],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, timeout_s=120)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def config(url: str) -> Config:
    return Config.model_validate({
        "providers": [{"name": "smollm2", "kind": "openai", "model": "smollm2", "base_url": url, "timeout_s": 300}],
        "routing": {"max_retries": 0},
        "agents": {"poet": {"description": "Writes poems and other short creative texts"},
                   "coder": {"description": "Writes and explains source code", "capabilities": ["code"]}},
        "agent_routing": {"default": "poet", "max_tokens": 120, "timeout_s": 300},
        "planner": {"max_repairs": 1, "max_tokens": 450, "timeout_s": 300}})


@pytest.mark.timeout(900)  # about 10 tokens a second on 2 loaded cores: a plan of ~300 tokens takes half a minute
async def test_routing_and_planning_on_a_real_small_model(llama_url: str) -> None:
    async with Client(build_server(config(llama_url), store_factory=MemoryStore)) as client:
        with anyio.fail_after(850):
            routed = await client.call_tool("orchestrate", {"prompt": "Write a Python function that reverses a "
                                                                      "string.", "agent": "auto", "max_tokens": 60})
            planned = await client.call_tool("plan_workflow", {
                "goal": "Two steps: the poet writes a four-line poem about the sea, then the coder turns it into "
                        "a Python list of its lines.", "constraints": {"max_steps": 2}})
    assert not routed.is_error, routed.content[0].text
    agent = routed.structured_content["agent"]
    assert agent["name"] in ("poet", "coder") and agent["via"] in ("model", "fallback"), agent
    assert agent["routing_latency_ms"] > 0
    print(f"\nrouting: {agent['name']} via {agent['via']} in {agent['routing_latency_ms']:.0f} ms "
          f"({agent['reason']!r})")
    if planned.is_error:  # the planner's failure, said clearly: the drafts it made and the last problems
        message = planned.content[0].text
        assert "no valid plan" in message and "the last draft's problems:" in message, message
        print(f"planning failed clearly: {message[:400]}")
    else:
        plan = planned.structured_content
        parsed = validate(plan["definition"])
        assert len(parsed.steps) <= 2 and plan["mermaid"].startswith("flowchart TD")
        print(f"planning: valid after {plan['attempts']} draft(s), {len(parsed.steps)} step(s): "
              f"{[(s.id, s.kind) for s in parsed.steps]}")
