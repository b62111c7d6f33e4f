"""Typed errors under one root.

Every error the server's core raises for a caller to read is an :class:`OrchestrationError` (the pool, the
policy, consensus, conversations, patterns in :mod:`knowledge.errors`, workflows, incidents, roles): the MCP
surface turns exactly these into tool errors with their message (``tools._context.core_errors``), and anything
else into "internal error (ref …)", logged with its traceback. No domain error subclasses ``ValueError`` or
``PermissionError``, so a bug's ``ValueError`` never passes for a caller's mistake.

Provider failures carry the fields the pool needs to decide what to do next (``provider``, ``status_code``,
``retry_after_s``, ``latency_ms``) and their :attr:`ProviderError.error_class`; the fallback rule by class is in
:mod:`server.pool.fallback`. SDK exceptions are translated into these in exactly one place per provider
(``server/pool/providers/*``), always ``raise ... from exc``.

Messages are built from our own words plus redacted upstream text: no error in this module ever carries a
credential (see :func:`server.security.redact.redact`).
"""

from __future__ import annotations

import math


class OrchestrationError(Exception):
    """Root of every error the server's core raises for a caller (its message is for the caller to read)."""


class InvalidRequest(OrchestrationError):
    """The caller's arguments cannot be served as given (an empty prompt, a NaN number, fewer than two
    answerers …); nothing was done."""


def require_finite(**values: float | None) -> None:
    """Refuse NaN and infinite numbers (JSON parsers accept ``NaN`` and ``Infinity``; no argument means them).

    Raises:
        InvalidRequest: naming the first offending argument.
    """
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise InvalidRequest(f"{name} must be a finite number, not {value!r}")


class ConfigError(OrchestrationError):
    """The configuration is invalid.

    Attributes:
        key: dotted path of the offending key (``providers[1].kind``), or ``""`` when the whole file is at fault.
    """

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class ProviderError(OrchestrationError):
    """A provider call failed.

    Attributes:
        provider: the configured provider name.
        status_code: the upstream HTTP status, when there was one.
        retry_after_s: the upstream's Retry-After hint in seconds, when it gave one.
        retryable: whether another provider (or a later retry) may succeed where this one failed.
    """

    retryable: bool = True
    error_class: str = "provider_error"

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.detail = message
        self.latency_ms: float | None = None
        """Milliseconds the attempt waited before it failed (set by the pool member that made it)."""


class ProviderTimeout(ProviderError):
    """The provider did not answer within the attempt's timeout."""

    error_class = "timeout"


class RateLimited(ProviderError):
    """The provider answered 429 (or an equivalent overload status)."""

    error_class = "rate_limited"


class ServerError(ProviderError):
    """The provider answered 5xx."""

    error_class = "server_error"


class ProviderConnectionError(ProviderError):
    """The connection failed or was dropped before a reply arrived."""

    error_class = "connection"


class MalformedReply(ProviderError):
    """The provider answered, but not with a reply we can read (invalid JSON, no text)."""

    error_class = "malformed_reply"


class AuthenticationFailed(ProviderError):
    """The provider refused the credentials (401/403). Another provider has other credentials."""

    error_class = "authentication"


class BadRequest(ProviderError):
    """The provider rejected the request itself as malformed (400/422: invalid parameters): every provider would
    refuse it for the same reason, so it is not sent to the others."""

    retryable = False
    error_class = "bad_request"


class NotFound(ProviderError):
    """The provider does not know the model or the endpoint (404): a fault of this provider's configuration."""

    error_class = "not_found"


class DeadlineExceeded(ProviderError):
    """The caller's deadline ended the attempt before the provider's own timeout did: a cancellation, recorded as
    ``cancelled`` and never counted against the provider."""

    retryable = False
    error_class = "deadline"


class ProviderUnavailable(ProviderError):
    """The provider may not take a call now (circuit open, cooling down, over a limit or its budget); it was not
    called."""

    error_class = "unavailable"


class ContextWindowExceeded(ProviderError):
    """The prompt does not fit the model's context window: only a provider with a larger window can help."""

    error_class = "context_window_exceeded"


class ContentRefused(ProviderError):
    """The provider refused the content (a content filter or a refusal stop reason); another model may not."""

    error_class = "content_refused"


class NoProvidersConfigured(OrchestrationError):
    """A model is needed but the pool is empty."""


class UnknownProvider(OrchestrationError):
    """A call named a provider that is not configured.

    Attributes:
        names: the unknown names.
        known: the configured names.
    """

    def __init__(self, names: list[str], known: list[str]) -> None:
        known_text = ", ".join(known) if known else "none configured"
        super().__init__(f"unknown provider(s): {', '.join(names)}; configured: {known_text}")
        self.names = names
        self.known = known


class AllProvidersFailed(OrchestrationError):
    """Every candidate provider failed for one call.

    Attributes:
        errors: the provider errors, in the order the providers were tried.
    """

    def __init__(self, errors: list[ProviderError]) -> None:
        lines = "; ".join(f"{e.provider} ({e.error_class}): {e.detail}" for e in errors)
        super().__init__(f"all {len(errors)} provider attempt(s) failed: {lines} — check the providers' status "
                         "with list_providers, or pass other `providers`.")
        self.errors = errors


class NoProviderAvailable(OrchestrationError):
    """Providers are configured, but none may take a call now (circuit open, cooling down, over a limit).

    Attributes:
        reasons: provider name -> why it was skipped.
        retry_after_s: seconds until the earliest one becomes available again, when known.
    """

    def __init__(self, reasons: dict[str, str], retry_after_s: float | None = None) -> None:
        detail = "; ".join(f"{name}: {why}" for name, why in reasons.items())
        hint = f"; retry in {retry_after_s:.1f} s" if retry_after_s is not None else ""
        super().__init__(f"no provider can take the call now ({detail}){hint}")
        self.reasons = reasons
        self.retry_after_s = retry_after_s


class BudgetExceeded(OrchestrationError):
    """The overall daily cost budget is spent."""


class PolicyError(OrchestrationError):
    """The server's policy refused a call before any provider was asked (see :mod:`server.pool.policy`)."""


class GuardrailBlocked(PolicyError):
    """A guardrail refused the call. The message names the rule, never the matching text."""


class CeilingExceeded(PolicyError):
    """A call (or a workflow) asks for more than a configured ceiling allows; nothing was sent to a provider."""
