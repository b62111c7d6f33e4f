"""``ai-orchestration-mcp check``: the shipped example configuration, warnings about keys that cannot be right,
and ``--probe`` against the local upstream (a good provider, a refused key, an unknown model, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app.cli import main
from server.simulator import Upstream
from tests.conftest import provider_entry, write_config
from tests.serving import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.toml"
REAL_LOOKING = "sk-proj-4f9a8c7e6d5b4a3f2e1d0c9b8a7f6e5d"


def test_the_example_configuration_checks_and_lists_its_providers(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(EXAMPLE)]) == 1  # no keys in the test environment
    out = capsys.readouterr().out
    assert "NOT READY: set OPENAI_API_KEY" in out and "NOT READY: set ANTHROPIC_API_KEY" in out
    assert "local-llama" in out and "ready (no key: custom endpoint)" in out
    monkeypatch.setenv("OPENAI_API_KEY", REAL_LOOKING)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-" + REAL_LOOKING[8:])
    assert main(["check", "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out and REAL_LOOKING not in out


@pytest.mark.parametrize("key", ["sk-...", "sk-ant-...", "<your key here>", "sk-short"])
def test_check_warns_about_a_key_that_looks_like_a_placeholder(
        key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", key)
    path = write_config(tmp_path / "c.toml", {"name": "main", "kind": "openai", "model": "gpt-4o-mini"})
    main(["check", "--config", str(path)])
    out = capsys.readouterr().out
    assert "WARNING: the key from OPENAI_API_KEY" in out and "set the real key" in out
    assert key not in out.replace("sk-...", "") or key == "sk-..."  # the key itself is not printed


def test_check_warns_about_a_named_key_variable_that_is_not_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "c.toml", {"name": "vllm", "kind": "openai", "model": "m",
                                              "base_url": "http://127.0.0.1:9/v1", "api_key_env": "VLLM_KEY"})
    assert main(["check", "--config", str(path)]) == 0
    assert "WARNING: VLLM_KEY is not set" in capsys.readouterr().out


def test_probe_reports_reachability_authentication_and_whether_the_model_exists(
        upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(
        tmp_path / "c.toml",
        provider_entry(upstream, "good", model="gpt-sim"),
        provider_entry(upstream, "refused", kind="anthropic", model="fail-401"),
        provider_entry(upstream, "unknown-model", model="fail-404"),
        {"name": "nobody", "kind": "openai", "model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1",
         "timeout_s": 5},
    )
    assert main(["check", "--probe", "--config", str(path)]) == 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[-4:]}
    assert "ok: reachable, key accepted, model gpt-sim answered" in lines["good"]
    assert "the key was refused" in lines["refused"] and "HTTP 401" in lines["refused"]
    assert "model or endpoint was not found" in lines["unknown-model"]
    assert "unreachable" in lines["nobody"] and "127.0.0.1:" in lines["nobody"]  # names the host
    assert len(upstream.requests) == 3 and all(r.body["max_tokens"] == 1 for r in upstream.requests)


@pytest.mark.anyio
async def test_connection_errors_name_the_provider_and_host_and_list_providers_says_failing(
        upstream: Upstream) -> None:
    from mcp import Client

    from server.app.assembly import build_server
    from server.store.memory import MemoryStore
    from tests.conftest import config_for

    port = free_port()
    config = config_for({"name": "gone", "kind": "openai", "model": "m", "base_url": f"http://127.0.0.1:{port}/v1",
                         "timeout_s": 5, "priority": 1},
                        provider_entry(upstream, "locked", kind="anthropic", model="fail-401", priority=2))
    async with Client(build_server(config, store_factory=MemoryStore)) as client:
        before = {p["name"]: p["status"] for p in
                  (await client.call_tool("list_providers", {})).structured_content["providers"]}
        first = await client.call_tool("orchestrate", {"prompt": "hi"})
        assert first.is_error
        text = first.content[0].text
        assert f"gone (connection): could not connect to 127.0.0.1:{port}" in text, text  # provider and endpoint
        for _ in range(2):
            assert (await client.call_tool("orchestrate", {"prompt": "hi", "providers": ["locked"]})).is_error
        health = {p["name"]: p for p in (await client.call_tool("list_providers", {})).structured_content["providers"]}
    assert before == {"gone": "untested", "locked": "untested"}
    # a refused key does not open the circuit (it says nothing about the endpoint), but the provider is not healthy
    assert (health["locked"]["status"], health["locked"]["circuit"]) == ("failing", "closed")
    assert health["locked"]["last_error_class"] == "authentication"
    assert health["gone"]["status"] == "failing"


def test_probe_goes_through_the_pool_policy_and_probes_each_provider_on_its_own(
        upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The policy a call meets applies to the probe too: a provider whose model [guardrails] allowed_models does not
    # permit is not sent anything. A failing provider is probed once, with no fallback to the next one.
    path = write_config(tmp_path / "c.toml",
                        provider_entry(upstream, "allowed", model="gpt-sim", priority=2),
                        provider_entry(upstream, "not-allowed", model="gpt-other", priority=3),
                        provider_entry(upstream, "failing", model="fail-503", priority=1))
    with path.open("a") as config:
        config.write('\n[guardrails]\nallowed_models = ["gpt-sim", "fail-503"]\n')
    assert main(["check", "--probe", "--config", str(path)]) == 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[-3:]}
    assert "ok: reachable" in lines["allowed"], lines
    assert "not sent: the server's policy refuses it" in lines["not-allowed"], lines
    assert "allowed_models" in lines["not-allowed"], lines
    assert "reachable, but the request failed" in lines["failing"] and "503" in lines["failing"], lines
    assert sorted(r.body["model"] for r in upstream.requests) == ["fail-503", "gpt-sim"]  # once each, nothing else
