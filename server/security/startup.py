"""Security checks and objects the entry point builds at start-up."""

from __future__ import annotations

from typing import Any

from server.config import Config
from server.errors import ConfigError
from server.store import KeyStore


def check_provider_addresses(config: Config) -> None:
    """Resolve every provider ``base_url`` host and refuse metadata or link-local targets.

    Raises:
        ConfigError: naming the provider.
    """
    from server.security.addresses import AddressPolicy, AddressRefused

    policy = AddressPolicy.from_settings(config.network)
    for index, provider in enumerate(config.providers):
        if provider.base_url:
            try:
                policy.check_url_resolved(provider.base_url)
            except AddressRefused as exc:
                raise ConfigError(str(exc), key=f"providers[{index}].base_url") from None


def http_verifier(config: Config, store: KeyStore) -> Any:
    """The token verifier for authenticated HTTP: API keys, then JWTs when ``[auth.jwt]`` is configured."""
    from server.security.verifiers import ApiKeyVerifier, ChainVerifier, JwtVerifier

    jwt = config.auth.jwt
    if jwt is not None:
        try:
            import jwt as _pyjwt  # noqa: F401 - checked now so a missing extra fails at start, not per request
        except ImportError:
            raise ConfigError("[auth.jwt] needs PyJWT: pip install 'ai-orchestration-mcp[jwt]'", key="auth.jwt") from None
    keys = ApiKeyVerifier(store, cache_s=config.auth.key_cache_s, extra_scopes=jwt.required_scopes if jwt else ())
    return keys if jwt is None else ChainVerifier(keys, JwtVerifier(jwt))
