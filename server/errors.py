"""Typed errors under one root.

Every error the orchestration core raises is an :class:`OrchestrationError`. Provider failures carry the
fields the pool needs to decide what to do next (``provider``, ``status_code``, ``retry_after_s``) and say
whether trying another provider can help (``retryable``). SDK exceptions are translated into these in
exactly one place per provider (``server/providers/*``), always ``raise ... from exc``.

Messages are built from our own words plus redacted upstream text: no error in this module ever carries a
credential (see :func:`server.security.redact.redact`).
"""

from __future__ import annotations


class OrchestrationError(Exception):
    """Root of every error the server's core raises."""


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
    """The provider rejected the request itself (400/404/422): another provider would most likely too."""

    retryable = False
    error_class = "bad_request"


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
        super().__init__(f"all {len(errors)} provider attempt(s) failed: {lines}")
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
