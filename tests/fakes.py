"""Test support: a scripted fake provider, for the pool, consensus and orchestrate logic without any network.

A :class:`FakeProvider` answers each request with the next scripted :class:`Reply` (then its default: the
simulator's echo, ``"[model] <last user message>"``): a text, a latency, token counts, a stop reason, an error of a
given class, or no answer at all until it is cancelled (``hang``). It records every request and what happened to
it, and counts calls in flight. A :class:`Fleet` is a provider factory (``build_server(provider_factory=fleet)``)
that hands out one fake per configured provider name.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import anyio

from server.config import Config, ProviderConfig
from server.errors import (
    AuthenticationFailed,
    BadRequest,
    ContentRefused,
    ContextWindowExceeded,
    MalformedReply,
    NotFound,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServerError,
)
from server.pool.providers import Completion, CompletionRequest, Usage
from server.pool.providers._errors import unless_refused

ERRORS: dict[str, type[ProviderError]] = {
    "server_error": ServerError, "rate_limited": RateLimited, "timeout": ProviderTimeout,
    "connection": ProviderConnectionError, "malformed_reply": MalformedReply, "authentication": AuthenticationFailed,
    "not_found": NotFound, "bad_request": BadRequest, "context_window_exceeded": ContextWindowExceeded,
    "content_refused": ContentRefused,
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    Attributes:
        text: the reply; ``None`` echoes ``"[model] <last user message>"``.
        latency_s: how long the answer takes (cancellable).
        hang: never answer; the request ends only when it is cancelled (early stop, a deadline, a timeout).
        error: fail with a provider error of this class (``server_error``, ``not_found`` …).
        retry_after_s: the error's Retry-After hint.
        raises: raise this exception instead (a bug, for internal-error tests).
        input_tokens / output_tokens: reported usage (default: word counts, as the simulator).
        finish_reason: the stop reason; ``content_filter`` / ``refusal`` are refusals, as the real providers read them.
        model: the model the answer says it came from (default: the provider's).
    """

    text: str | None = None
    latency_s: float = 0.0
    hang: bool = False
    error: str | None = None
    retry_after_s: float | None = None
    raises: BaseException | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    model: str | None = None


def fail(error_class: str, **kwargs: Any) -> Reply:
    """A reply that fails with ``error_class``."""
    return Reply(error=error_class, **kwargs)


@dataclass
class Seen:
    """A request as the fake received it, and how it ended (``answered``, ``failed``, ``cancelled``)."""

    request: CompletionRequest
    outcome: str = "pending"


class FakeProvider:
    """A provider that answers from a script (see the module docstring)."""

    def __init__(self, name: str, model: str | None = None) -> None:
        self.name = name
        self.model = model or f"{name}-model"
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.closed = False
        self._script: collections.deque[Reply] = collections.deque()
        self._repeat = False

    @property
    def requests(self) -> list[CompletionRequest]:
        return [s.request for s in self.seen]

    def script(self, *replies: Reply, repeat: bool = False) -> FakeProvider:
        """Queue replies for the next requests, in order; ``repeat`` keeps answering with the last one until the
        next script."""
        if self._repeat:
            self._script.clear()
        self._script.extend(replies)
        self._repeat = repeat
        return self

    def _next(self) -> Reply:
        if not self._script:
            return Reply()
        if self._repeat and len(self._script) == 1:
            return self._script[0]
        return self._script.popleft()

    async def complete(self, request: CompletionRequest) -> Completion:
        seen = Seen(request)
        self.seen.append(seen)
        reply = self._next()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if reply.hang:
                await anyio.sleep_forever()
            if reply.latency_s:
                await anyio.sleep(reply.latency_s)  # bounded-wait, pacing: the scripted reply's latency
            if reply.raises is not None:
                raise reply.raises
            if reply.error is not None:
                error = ERRORS[reply.error](self.name, f"scripted {reply.error}", retry_after_s=reply.retry_after_s)
                raise error
            completion = unless_refused(self.name, self._completion(request, reply))
        except anyio.get_cancelled_exc_class():
            seen.outcome = "cancelled"
            raise
        except BaseException:
            seen.outcome = "failed"
            raise
        finally:
            self.in_flight -= 1
        seen.outcome = "answered"
        return completion

    def _completion(self, request: CompletionRequest, reply: Reply) -> Completion:
        last = request.messages[-1].content if request.messages else ""
        text = reply.text if reply.text is not None else f"[{self.model}] {last}"
        words_in = sum(len(m.content.split()) for m in request.messages) + len((request.system or "").split())
        return Completion(text=text, model=reply.model or self.model,
                          usage=Usage(words_in if reply.input_tokens is None else reply.input_tokens,
                                      len(text.split()) if reply.output_tokens is None else reply.output_tokens),
                          finish_reason=reply.finish_reason or "stop")

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Fleet:
    """A provider factory handing out one :class:`FakeProvider` per provider name (the same one every time)."""

    fakes: dict[str, FakeProvider] = field(default_factory=dict)

    def __call__(self, config: ProviderConfig) -> FakeProvider:
        fake = self.fakes.get(config.name)
        if fake is None:
            fake = self.fakes[config.name] = FakeProvider(config.name, config.model)
        return fake

    def __getitem__(self, name: str) -> FakeProvider:
        return self.fakes[name]

    def seen(self) -> list[CompletionRequest]:
        """Every request any fake received."""
        return [s.request for fake in self.fakes.values() for s in fake.seen]


def fake_entry(name: str, kind: str = "openai", model: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ``[[providers]]`` entry for a fake (a base URL that nothing ever connects to makes it ready)."""
    base_url = "http://127.0.0.1:9/v1" if kind == "openai" else "http://127.0.0.1:9"
    return {"name": name, "kind": kind, "model": model or f"{name}-model", "base_url": base_url, **extra}


def fake_config(*entries: dict[str, Any], **sections: Any) -> Config:
    """A validated :class:`Config` from fake entries."""
    return Config.model_validate({"providers": list(entries), **sections})


def fleet_for(config: Config) -> Fleet:
    """A fleet with a fake already made for each configured provider (so tests can script them first)."""
    fleet = Fleet()
    for provider in config.providers:
        fleet(provider)
    return fleet
