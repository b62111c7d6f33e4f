"""The security sections of the configuration: ``[auth]``, ``[limits]``, ``[guardrails]``, ``[network]``.

Pydantic only (imported by :mod:`server.config` at start-up, so nothing heavy here).

```toml
[auth]
enabled = true                      # API keys (``ai-orchestration-mcp keys create``); on by default for --host
                                    # other than loopback, and required there
[auth.jwt]                          # optional: also accept JWTs from an OAuth authorization server
jwks_url = "https://idp.example.com/.well-known/jwks.json"
issuer = "https://idp.example.com/"
audience = "https://mcp.example.com/mcp"
required_scopes = ["mcp"]           # 403 insufficient_scope without them
admin_scope = "mcp:admin"           # tokens carrying it act as role admin

[limits]
max_body_bytes = 1048576
requests_per_minute = 120           # per key; 429 + Retry-After over it
max_concurrent_calls = 8            # per key
max_sessions_per_key = 128          # handshake-era Streamable HTTP sessions per key (429 over it)
session_idle_s = 300                # such a session with nothing in flight for this long is closed
max_sessions = 10000                # all keys together
max_tokens_per_call = 16000         # max_tokens ceiling for orchestrate / consensus (per answer)
max_cost_usd_per_call = 0.50        # worst-case estimate, refused before any provider is called
workflow_max_steps = 200
workflow_max_duration_s = 3600
workflow_max_active_runs = 100      # per principal: unfinished runs
workflow_max_waiting_approvals = 200  # per principal: approval steps in unfinished runs

[guardrails]
allowed_models = ["gpt-4o-mini"]
blocked_input_patterns = ["(?i)ignore (all )?previous instructions"]
blocked_output_patterns = ["(?i)BEGIN RSA PRIVATE KEY"]
redact_pii = true

[network]
allow_addresses = ["169.254.169.254/32"]   # explicit exceptions to the address policy
deny_addresses = ["10.0.0.0/8"]            # refused as well (wins over allow_addresses)
```
"""

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JwtSettings(_Strict):
    """``[auth.jwt]``: JWT bearer tokens verified against a JWKS (the MCP authorization spec's resource server)."""

    jwks_url: str = Field(pattern=r"^https?://\S+$")
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    """Also the resource URL advertised in the protected-resource metadata."""
    required_scopes: tuple[str, ...] = ()
    admin_scope: str = "admin"
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
    leeway_s: float = Field(default=30.0, ge=0, le=600)
    authorization_servers: tuple[str, ...] = ()
    """Advertised in the protected-resource metadata (default: ``issuer``)."""


class AuthSettings(_Strict):
    """``[auth]``."""

    enabled: bool | None = None
    """``None``: on when the server binds a non-loopback address, off on loopback."""
    key_cache_s: float = Field(default=2.0, ge=0, le=300)
    """How long a verified API key is trusted without a database lookup (a revocation takes effect within it)."""
    jwt: JwtSettings | None = None


class LimitSettings(_Strict):
    """``[limits]``: per-request and per-key limits on HTTP, per-call ceilings on every transport."""

    max_body_bytes: int = Field(default=1_048_576 * 4, ge=1024, le=256 * 1_048_576)
    requests_per_minute: int | None = Field(default=600, ge=1)
    max_concurrent_calls: int | None = Field(default=16, ge=1)
    max_sessions_per_key: int = Field(default=128, ge=1, le=100_000)
    """Handshake-era Streamable HTTP sessions one key may hold at once (429 above it). A service sharing one key
    across many clients needs one each (``bench/http_load.py`` runs 50); 78 keys at the limit would still not
    fill the table of ``max_sessions``."""
    session_idle_s: float = Field(default=300.0, gt=0, le=86_400, allow_inf_nan=False)
    """A handshake-era session with no request in flight (an open GET stream counts) for this long is closed."""
    max_sessions: int = Field(default=10_000, ge=1, le=1_000_000)
    """Handshake-era sessions of all keys together (the MCP SDK's cap; 503 above it)."""
    max_tokens_per_call: int | None = Field(default=None, ge=1)
    max_cost_usd_per_call: float | None = Field(default=None, ge=0)
    workflow_max_steps: int = Field(default=1000, ge=1, le=100_000)  # the definition limit
    # A week by default: runs may wait for human approvals (a day each by default).
    workflow_max_duration_s: float = Field(default=7 * 86_400.0, gt=0, le=30 * 86_400)
    # Per principal (API key, JWT subject; all unauthenticated callers count as one): unfinished runs, and
    # approval steps in them (each waiting approval holds a receiver until it is decided or times out).
    workflow_max_active_runs: int = Field(default=100, ge=1, le=100_000)
    workflow_max_waiting_approvals: int = Field(default=200, ge=1, le=1_000_000)


class GuardrailSettings(_Strict):
    """``[guardrails]``: input and output policies on every path to a provider (see :mod:`server.pool.policy`)."""

    allowed_models: tuple[str, ...] | None = None
    blocked_input_patterns: tuple[str, ...] = ()
    blocked_output_patterns: tuple[str, ...] = ()
    redact_pii: bool = False
    phone_region: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    """The region (ISO 3166-1 alpha-2) whose national phone numbers PII redaction recognises (full mode)."""

    @field_validator("blocked_input_patterns", "blocked_output_patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern [{index}] is not a valid regular expression: {exc.msg}") from None
        return patterns

    @property
    def active(self) -> bool:
        """Whether any policy is configured (decisions are recorded only then)."""
        return bool(self.allowed_models is not None or self.blocked_input_patterns or self.blocked_output_patterns
                    or self.redact_pii)


class NetworkSettings(_Strict):
    """``[network]``: exceptions to the outbound address policy (see :mod:`server.security.addresses`)."""

    allow_addresses: tuple[str, ...] = ()
    """CIDRs or host names that the policy would refuse but are wanted (e.g. a proxy on a link-local address)."""
    deny_addresses: tuple[str, ...] = ()
    """CIDRs or host names refused on top of the built-in refusals (e.g. a VPC's private ranges); an entry here
    wins over ``allow_addresses``."""
