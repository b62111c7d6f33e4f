"""The ``consensus`` tool."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field

from server.consensus.service import ConsensusRequest, ConsensusResult, Method
from server.security import caller
from tools._context import core_errors, dependencies, make_tool
from tools.orchestrate import MAX_PROMPT_CHARS, Name, PatternName, Variables, check_variables_size

DESCRIPTION = """Ask several LLMs the same question in parallel and aggregate their answers into a consensus.

Methods: `vote` / `weighted_vote` for short or multiple-choice answers (give `choices`, or `answer_path`
for a JSON field), `similarity` for free text (clusters similar answers, returns the most central one of
the largest cluster), `bayesian` (each model also states a confidence; answers are fused with each
provider's track record), `synthesize` (a judge model that did not answer combines the anonymised
answers). Default: vote when `choices`/`answer_path` are given, else similarity. The result has
`status` (consensus / no_consensus / partial), `answer`, `agreement` in [0, 1] compared with
`threshold`, every provider's answer, the dissenting answers, tallies or clusters, cost and latency.
A failing or slow provider does not fail the call; `deadline_s` bounds the wait.
Instead of `prompt`, pass `pattern` (a saved pattern's name, see search_patterns) with its `variables`."""


async def consensus_tool(
    ctx: Context,
    prompt: Annotated[str | None, Field(description="The question to ask every model (or give `pattern`).",
                                        max_length=MAX_PROMPT_CHARS)] = None,
    system: Annotated[str | None, Field(description="Optional system prompt.", max_length=MAX_PROMPT_CHARS)] = None,
    providers: Annotated[
        list[Name] | None, Field(description="Provider names to ask (default: the best `max_providers`).",
                                 max_length=32)
    ] = None,
    max_providers: Annotated[int, Field(description="How many providers to ask when `providers` is not given.",
                                        ge=2, le=32)] = 3,
    method: Annotated[Method | None, Field(description="Aggregation method (see the tool description).")] = None,
    threshold: Annotated[float, Field(description="Agreement needed for status=consensus.", gt=0, le=1,
                                      allow_inf_nan=False)] = 0.8,
    choices: Annotated[
        list[Annotated[str, Field(max_length=200)]] | None,
        Field(description="Allowed answers for a vote; each answer is mapped to the choice it names.", max_length=50),
    ] = None,
    answer_path: Annotated[
        str | None, Field(description='Dotted path of the field to compare in JSON answers, e.g. "verdict".',
                          max_length=200)
    ] = None,
    judge: Annotated[Name | None, Field(description="synthesize: the provider that writes the final answer.")] = None,
    rounds: Annotated[int, Field(description="synthesize: extra rounds in which answerers revise.", ge=0, le=3)] = 0,
    samples_per_provider: Annotated[
        int, Field(description="Answers per provider (self-consistency).", ge=1, le=10)
    ] = 1,
    deadline_s: Annotated[
        float | None, Field(description="Soft deadline: go on with the answers in hand (status partial).",
                            gt=0, le=600, allow_inf_nan=False)
    ] = None,
    hard_deadline_s: Annotated[
        float | None, Field(description="Nothing is awaited past this (default: twice deadline_s).", gt=0, le=1200,
                            allow_inf_nan=False)
    ] = None,
    max_tokens: Annotated[int, Field(description="Completion token ceiling per answer.", ge=1, le=200_000)] = 1024,
    temperature: Annotated[float | None, Field(description="Sampling temperature.", ge=0, le=2,
                                               allow_inf_nan=False)] = None,
    pattern: PatternName | None = None,
    variables: Variables | None = None,
) -> ConsensusResult:
    deps = dependencies(ctx)
    check_variables_size(variables)
    ask = ConsensusRequest(
        prompt=prompt, system=system, providers=providers, max_providers=max_providers, method=method,
        threshold=threshold, choices=tuple(choices or ()), answer_path=answer_path, judge=judge, rounds=rounds,
        samples_per_provider=samples_per_provider, deadline_s=deadline_s, hard_deadline_s=hard_deadline_s,
        max_tokens=max_tokens, temperature=temperature, pattern=pattern, variables=variables,
    )
    with core_errors():
        return await deps.consensus.run(ask, ctx.report_progress, principal=caller(ctx))


def tool() -> Tool:
    """The ``consensus`` tool."""
    return make_tool(
        consensus_tool,
        name="consensus",
        description=DESCRIPTION,
        annotations=ToolAnnotations(title="Ask several models and aggregate", read_only_hint=False,
                                    destructive_hint=False, idempotent_hint=False, open_world_hint=True),
    )
