"""What a consensus call takes and gives back: :class:`ConsensusRequest`, :class:`ConsensusResult` (with one
:class:`ResponseReport` per answer) and the errors a call can end with. Shared by the service, the tool, the
workflow step and the task that runs a consensus durably."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from server.consensus.host import HostAnswer
from server.errors import InvalidRequest, OrchestrationError
from server.models import DeferredModel

Method = Literal["vote", "weighted_vote", "similarity", "bayesian", "synthesize"]
METHODS: tuple[str, ...] = ("vote", "weighted_vote", "similarity", "bayesian", "synthesize")


class ConsensusInputError(InvalidRequest):
    """Arguments that cannot produce a consensus (fewer than two answerers, bad threshold, unknown method)."""


class NotEnoughAnswers(OrchestrationError):
    """Fewer than two usable answers came back."""


class ResponseReport(DeferredModel):
    """One answerer's outcome. Times in milliseconds, cost in USD."""

    provider: str
    model: str | None = None
    sample: int = 0
    status: str = Field(description="ok, error, unusable (no choice / JSON field found), cancelled (early stop), "
                                    "missing (deadline) or refused (the host's model)")
    answer: str | None = None
    normalized: str | None = None
    confidence: float | None = None
    latency_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    error_class: str | None = None


class ConsensusResult(DeferredModel):
    """The ``consensus`` result."""

    status: str = Field(description="consensus, no_consensus, or partial (answers missing at the deadline, or "
                                    "the host's model refused)")
    answer: str | None
    agreement: float = Field(description="in [0, 1]; see agreement_basis")
    agreement_basis: str
    threshold: float
    method: str
    tie: bool = False
    responses: list[ResponseReport]
    groups: list[dict] = Field(description="vote tallies, clusters or posteriors, heaviest first")
    dissent: list[ResponseReport] = Field(description="usable answers outside the winning group")
    missing: list[str] = Field(default_factory=list, description="answerers still out at the deadline")
    early_stop: bool = False
    judge: ResponseReport | None = None
    usage: dict[str, int]
    cost_usd: float
    latency_ms: float
    pattern: str | None = Field(default=None, description="the pattern the prompt was rendered from")
    pattern_version: int | None = Field(default=None, description="the version of that pattern")


@dataclass(frozen=True, slots=True)
class ConsensusRequest:
    """The arguments of one consensus call: ``prompt``, or ``pattern`` rendered with ``variables``; ``host``: the
    client's own model's answer, asked before the call (:mod:`server.consensus.host`)."""

    prompt: str | None = None
    system: str | None = None
    providers: Sequence[str] | None = None
    max_providers: int = 3
    method: Method | None = None
    threshold: float = 0.8
    choices: Sequence[str] = ()
    answer_path: str | None = None
    judge: str | None = None
    rounds: int = 0
    samples_per_provider: int = 1
    deadline_s: float | None = None
    hard_deadline_s: float | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    pattern: str | None = None
    variables: Mapping[str, Any] | None = None
    host: HostAnswer | None = None
