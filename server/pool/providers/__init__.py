"""One small Provider protocol, the request/response types, and the registry of provider kinds.

A provider is a model at an endpoint: ``name``, ``model``, ``async complete(request) -> Completion`` and
``aclose()``. A provider may also offer ``async prepare()`` (one-time set-up the pool runs before timing
the first attempt). The registry maps a ``kind`` from the configuration to a factory; each factory imports its
vendor SDK lazily, on the first call, so starting the server and listing tools loads no SDK.

The pool composes providers the way pydantic-ai composes models (``models/wrapper.py``, ``fallback.py``): its
members, the recording wrapper, the fallback provider and the policy wrapper are all :class:`Provider` s, and a
:class:`Completion` says who answered, at what cost, and every :class:`Attempt` it took.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from server.config import ProviderConfig
from server.errors import ConfigError

if TYPE_CHECKING:
    from server.security.addresses import AddressPolicy

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What the pool asks a provider for.

    Attributes:
        messages: the conversation, oldest first; the last one is the user's prompt.
        system: the system prompt, if any.
        max_tokens: the completion's token ceiling.
        temperature: sampling temperature in [0, 2], or ``None`` for the provider's default.
        timeout_s: the time limit of this call in seconds (for a composite provider, of the whole call: the
            caller's deadline); ``None``: each provider's configured ``timeout_s``.
        response_format: ``text``, or ``json`` for a reply that must be one JSON value (the pool validates it).
    """

    messages: tuple[Message, ...]
    system: str | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    timeout_s: float | None = None
    response_format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one completion."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider attempt within a call, as reported to the client.

    Attributes:
        provider / model: who was asked (the configured name; the model as configured or as it answered).
        status: ``ok``, ``error``, ``cancelled`` (early stop, a deadline, the client) or ``cached``.
        latency_ms: time spent waiting on this provider.
        error_class: the failure class (``rate_limited``, ``timeout`` …), ``None`` on success.
        error: a redacted one-line description of the failure.
    """

    provider: str
    model: str
    status: str
    latency_ms: float
    error_class: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A provider's answer.

    Attributes:
        text: the completion text.
        model: the model that answered, as the upstream reports it.
        usage: token counts as the upstream reports them.
        finish_reason: the upstream's stop reason (``stop``, ``end_turn``, ``length`` …).
        provider: the configured name of the pool member that answered (set by the pool; ``None`` from a bare
            SDK or wire provider, and for a response-cache hit's synthetic attempt).
        cost_usd: the answer's price from the configured per-token prices (set by the pool).
        latency_ms: milliseconds spent waiting on providers for it, every attempt (set by the pool).
        attempts: every attempt the answer took, the last one the success (set by the pool).
    """

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    provider: str | None = None
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: tuple[Attempt, ...] = ()


@runtime_checkable
class Provider(Protocol):
    """A model at an endpoint. Implementations translate their SDK's exceptions into :mod:`server.errors`."""

    name: str
    model: str

    async def complete(self, request: CompletionRequest) -> Completion:
        """Return one completion.

        Raises:
            server.errors.ProviderError: a subclass naming the failure class (one provider's failure).
            server.errors.OrchestrationError: composite providers also raise the pool's errors
                (:class:`~server.errors.AllProvidersFailed`, :class:`~server.errors.NoProviderAvailable`) and the
                policy's (:class:`~server.errors.GuardrailBlocked`, :class:`~server.errors.CeilingExceeded`).
        """
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


ProviderFactory = Callable[[ProviderConfig], Provider]

# kind -> "module:attribute" of the factory; the module is imported only when a provider of that kind is built.
_REGISTRY: dict[str, str] = {
    "openai": "server.pool.providers.openai_sdk:OpenAIProvider",
    "anthropic": "server.pool.providers.anthropic_sdk:AnthropicProvider",
}
# Simple mode: the same kinds, spoken over httpx2 without the vendor SDKs.
WIRE_REGISTRY: dict[str, str] = {
    "openai": "server.pool.providers.openai_wire:OpenAIWireProvider",
    "anthropic": "server.pool.providers.anthropic_wire:AnthropicWireProvider",
}


def provider_kinds() -> list[str]:
    """The kinds this build can construct."""
    return sorted(_REGISTRY)


def build_provider(config: ProviderConfig, registry: dict[str, str] | None = None, *,
                   policy: AddressPolicy | None = None) -> Provider:
    """Construct the provider a config entry describes (its SDK client is created on first use).

    Args:
        policy: the outbound address policy its HTTP client enforces (default: the built-in policy without the
            ``[network]`` exceptions; the entry point passes the configured one).

    Raises:
        ConfigError: the kind is not registered.
    """
    target = (registry or _REGISTRY).get(config.kind)
    if target is None:
        raise ConfigError(f"unknown provider kind {config.kind!r}; known: {', '.join(provider_kinds())}", key="kind")
    module_name, _, attribute = target.partition(":")
    factory: Callable[..., Provider] = getattr(importlib.import_module(module_name), attribute)
    return factory(config) if policy is None else factory(config, policy=policy)


def build_wire_provider(config: ProviderConfig, *, policy: AddressPolicy | None = None) -> Provider:
    """Simple mode's :func:`build_provider`: the wire-protocol provider of the config's kind (no vendor SDK).

    Raises:
        ConfigError: the kind is not registered.
    """
    return build_provider(config, WIRE_REGISTRY, policy=policy)
