"""Configuration: schema errors name their key, discovery, the key-resolution order, `check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app.cli import main
from server.config import ProviderConfig, database_path, load_config, resolve_api_key
from server.errors import ConfigError
from tests.conftest import write_config


def test_unknown_key_is_an_error_naming_its_path(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[providers]]\nname = "a"\nkind = "openai"\nmodel = "m"\n\n[[providers]]\nname = "b"\n'
                    'kind = "openai"\nmodel = "m"\nprioritty = 2\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key == "providers[1].prioritty"
    assert "unknown key" in str(info.value)


def test_invalid_kind_names_the_key_and_the_allowed_values(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", {"name": "a", "kind": "gemini", "model": "m"})
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key == "providers[0].kind"
    assert "'openai'" in str(info.value) and "'anthropic'" in str(info.value)


def test_duplicate_provider_names_are_refused(tmp_path: Path) -> None:
    entry = {"name": "a", "kind": "openai", "model": "m"}
    with pytest.raises(ConfigError, match="used twice"):
        load_config(write_config(tmp_path / "c.toml", entry, entry), {})


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[providers]\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad, {})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", {})


def test_discovery_from_environment_resolves_keys() -> None:
    env = {"OPENAI_API_KEY": "sk-test-openai-123456", "ANTHROPIC_API_KEY": "sk-ant-test-654321",
           "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/"}
    config = load_config(None, env)
    assert [p.name for p in config.providers] == ["openai", "anthropic"]
    assert config.providers[0].api_key.get_secret_value() == "sk-test-openai-123456"
    assert config.providers[1].base_url == "http://127.0.0.1:9/"
    assert config.source == "environment"


def test_no_environment_means_no_providers() -> None:
    assert load_config(None, {}).providers == ()


def test_key_resolution_order_explicit_then_file_then_environment() -> None:
    provider = ProviderConfig(name="p", kind="openai", model="m", api_key_env="MY_KEY")
    env = {"MY_KEY": "from-env"}
    assert resolve_api_key(provider, env).get_secret_value() == "from-env"
    from_file = ProviderConfig.model_validate({**provider.model_dump(exclude={"api_key"}), "api_key": "from-file"})
    assert resolve_api_key(from_file, env).get_secret_value() == "from-file"
    assert resolve_api_key(from_file, env, explicit="explicit").get_secret_value() == "explicit"


def test_custom_endpoint_never_borrows_the_vendor_key() -> None:
    """An OpenAI key must not be sent to whatever server a custom base_url names."""
    local = ProviderConfig(name="ollama", kind="openai", model="llama3", base_url="http://127.0.0.1:11434/v1")
    assert resolve_api_key(local, {"OPENAI_API_KEY": "sk-real-key-000000"}) is None
    assert local.readiness() is None  # a local endpoint may need no key


def test_missing_key_readiness_names_the_variable() -> None:
    provider = ProviderConfig(name="claude", kind="anthropic", model="claude-x")
    assert "ANTHROPIC_API_KEY" in (provider.readiness() or "")


def test_database_path_precedence(tmp_path: Path) -> None:
    config = load_config(None, {})
    env = {"HOME": str(tmp_path), "AI_ORCHESTRATION_DB": str(tmp_path / "env.db")}
    assert database_path(config, env, str(tmp_path / "flag.db")) == tmp_path / "flag.db"
    assert database_path(config, env) == tmp_path / "env.db"
    assert database_path(config, {"HOME": str(tmp_path)}).name == "state.db"


def test_check_lists_providers_without_printing_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "sk-canary-check-abcdef123456"
    monkeypatch.setenv("CANARY_KEY", secret)
    path = write_config(tmp_path / "c.toml", {"name": "main", "kind": "openai", "model": "gpt-x",
                                              "api_key_env": "CANARY_KEY"},
                        {"name": "claude", "kind": "anthropic", "model": "claude-x"})
    code = main(["check", "--config", str(path)])
    out = capsys.readouterr()
    assert code == 1  # claude has no key
    assert "main" in out.out and "ready (key from CANARY_KEY)" in out.out
    assert "NOT READY: set ANTHROPIC_API_KEY" in out.out
    assert secret not in out.out + out.err


def test_check_with_bad_config_exits_non_zero_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "c.toml", {"name": "a", "kind": "openai", "model": "m", "timeout_s": -1})
    assert main(["check", "--config", str(path)]) == 2
    assert "providers[0].timeout_s" in capsys.readouterr().err
