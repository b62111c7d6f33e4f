"""The connected client's own model as a consensus member (``kind = "sampling"`` in the design).

The MCP surface asks the client's model through sampling (``sampling/createMessage``, MCP 2025-11-25 "Sampling";
deprecated by SEP-2577, so nothing essential rests on it) *before* the consensus runs, with the request the
service screened (:meth:`server.consensus.service.ConsensusService.host_request`), and hands the outcome over as
a :class:`HostAnswer`. In the fan-out the answer is one more slot, named :data:`HOST`: a :class:`HostProvider`
behind the same recording and policy wrappers as every pool member (its reply screened, masked and recorded), but
never a pool member, so it is never a fallback candidate, a judge, or a reviser. Workflow steps have no client to
ask: a ``consensus`` step cannot include it.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import ProviderError
from server.pool.providers import Completion, CompletionRequest

HOST = "host:sampling"
"""The host's slot name in reports and call records (no configured provider can be named so: names have no
colon)."""


@dataclass(frozen=True, slots=True)
class HostAnswer:
    """What the client's model said when it was asked before the call ran.

    Attributes:
        text: its answer (``None`` when it refused or gave no text).
        model: the model the client says answered.
        refusal: why there is no answer (the client's error, or "no text"), redacted by the surface.
        latency_ms: how long the client took (``None`` when the answer came with a retry of the call, as in the
            2026-07-28 revision's input-required rounds).
    """

    text: str | None
    model: str | None = None
    refusal: str | None = None
    latency_ms: float | None = None


class HostRefused(ProviderError):
    """The client's model did not answer: the consensus goes on without it and says so (``partial``)."""

    retryable = False
    error_class = "refused"


class HostProvider:
    """A :class:`~server.pool.providers.Provider` that gives the host's answer it was built with (asked before
    the call ran; nothing is sent from here)."""

    def __init__(self, answer: HostAnswer) -> None:
        self.answer = answer
        self.name = HOST
        self.model = answer.model or "host"

    async def complete(self, request: CompletionRequest) -> Completion:
        """The host's answer (usage unknown to the server: zero tokens, no cost).

        Raises:
            HostRefused: the client's model refused or gave no text.
        """
        if self.answer.text is None:
            raise HostRefused(HOST, self.answer.refusal or "the client's model gave no answer")
        return Completion(text=self.answer.text, model=self.model, provider=HOST,
                          latency_ms=self.answer.latency_ms or 0.0)

    async def aclose(self) -> None:
        """Nothing to close."""
