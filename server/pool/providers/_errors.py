"""Status-code translation shared by the SDK and wire-protocol providers.

Each provider module translates its own exception types (the one place per provider); this module holds
the mapping from an HTTP status and headers to our typed errors, which both vendors' wire formats share.
"""

from __future__ import annotations

import email.utils
import re
import time
from urllib.parse import urlsplit
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from server.errors import (
    AuthenticationFailed,
    BadRequest,
    ContentRefused,
    ContextWindowExceeded,
    NotFound,
    ProviderError,
    RateLimited,
    ServerError,
)
from server.security.redact import short_detail

if TYPE_CHECKING:
    from server.pool.providers import Completion

# OpenAI reports a filtered completion as "content_filter", Anthropic a declined one as "refusal".
REFUSAL_REASONS = frozenset({"content_filter", "refusal"})


def endpoint_host(base_url: str) -> str:
    """``host`` or ``host:port`` of an endpoint URL, for error messages: never its user info, path or query
    (which may carry a credential)."""
    parts = urlsplit(base_url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


def unless_refused(provider: str, completion: Completion) -> Completion:
    """``completion`` as it is, or :class:`ContentRefused` when the model declined (its stop reason says so)."""
    if completion.finish_reason in REFUSAL_REASONS:
        raise ContentRefused(provider, f"the model declined (stop reason {completion.finish_reason!r})")
    return completion


# OpenAI: code "context_length_exceeded" / "maximum context length"; Anthropic: "prompt is too long";
# OpenAI-compatible servers (vLLM, Ollama) word it like OpenAI.
_CONTEXT_WINDOW = re.compile(r"context[_ ]length[_ ]exceeded|maximum context length|prompt is too long|"
                             r"context window", re.IGNORECASE)
# OpenAI answers a flagged prompt 400 with code "content_policy_violation" (Azure: "content_filter"); LiteLLM
# maps the same wording to its ContentPolicyViolationError.
_CONTENT_POLICY = re.compile(r"content[_ ]policy|content[_ ]filter|safety system", re.IGNORECASE)


def retry_after_s(headers: Mapping[str, str] | None, now: Callable[[], float] = time.time) -> float | None:
    """Parse ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date, RFC 9110 §10.2.3) into seconds."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else max(0.0, parsed.timestamp() - now())


def error_for_status(
    provider: str,
    status_code: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """The typed error for an HTTP error status from a provider's endpoint.

    429 and 529 (Anthropic's "overloaded") are rate limits; 408 and 5xx are server errors; 401/403 are
    authentication failures; 404 is a model or endpoint this provider does not have; a 400/413 that names the
    context window is a context-window overflow, a 400 that names the content policy a refusal; other 4xx are bad
    requests (invalid parameters: every provider would refuse them). The README's fallback table follows this.
    """
    detail = f"HTTP {status_code}: {short_detail(message, secrets)}"
    kwargs = {"status_code": status_code, "retry_after_s": retry_after_s(headers)}
    if status_code in (429, 529):
        return RateLimited(provider, detail, **kwargs)
    if status_code in (401, 403):
        return AuthenticationFailed(provider, detail, **kwargs)
    if status_code == 408 or status_code >= 500:
        return ServerError(provider, detail, **kwargs)
    if status_code == 404:
        return NotFound(provider, detail, **kwargs)
    if status_code in (400, 413) and _CONTEXT_WINDOW.search(message):
        return ContextWindowExceeded(provider, detail, **kwargs)
    if status_code == 400 and _CONTENT_POLICY.search(message):
        return ContentRefused(provider, detail, **kwargs)
    return BadRequest(provider, detail, **kwargs)
