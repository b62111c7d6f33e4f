"""The ``consensus`` tool."""

from typing import Annotated

from mcp.server.mcpserver import Context, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CreateMessageResult, ToolAnnotations
from pydantic import Field

from server.consensus.host import HostAnswer
from server.consensus.report import ConsensusRequest, ConsensusResult, Method
from server.security import caller
from server.workflows.consensus_runs import start_consensus_run
from tools._arguments import Guard
from tools._context import AS_TASK, TaskStarted, core_errors, dependencies, make_tool
from tools._sampling import ask_host, host_answer
from tools.orchestrate import MAX_PROMPT_CHARS, Name, PatternName, Variables, check_variables_size

DESCRIPTION = """Ask several LLMs and aggregate: method vote or weighted_vote (short answers: give
`choices` or `answer_path`), similarity (free text), bayesian, synthesize (a `judge` merges them); default vote
with choices, else similarity. Give `prompt`, or `pattern` and `variables`. Returns status, answer, agreement
0-1, each answer, dissent, cost."""


async def _host(ctx: Context, host: bool, prompt: str | None, system: str | None, method: Method | None,
                threshold: float, choices: list[str] | None, answer_path: str | None, samples_per_provider: int,
                deadline_s: float | None, hard_deadline_s: float | None, max_tokens: int,
                temperature: float | None, pattern: str | None,
                variables: dict | None) -> Sample | HostAnswer | None:
    """The client's model's answer, asked before the body runs when the caller set ``host``
    (:mod:`tools._sampling`), with the request the answerers get, screened under the caller."""
    if not host:
        return None
    if AS_TASK.get():
        raise ToolError("host: the host's model can join a direct consensus call only, not a task")
    check_variables_size(variables)  # before the pattern is rendered for the question
    ask = ConsensusRequest(prompt=prompt, system=system, method=method, threshold=threshold,
                           choices=tuple(choices or ()), answer_path=answer_path,
                           samples_per_provider=samples_per_provider, deadline_s=deadline_s,
                           hard_deadline_s=hard_deadline_s, max_tokens=max_tokens, temperature=temperature,
                           pattern=pattern, variables=variables)
    with core_errors():
        request = await dependencies(ctx).consensus.host_request(ask, caller(ctx))
    return await ask_host(ctx, request)


async def consensus_tool(
    ctx: Context,
    host_reply: Annotated[CreateMessageResult | HostAnswer | None, Resolve(_host)],
    prompt: Annotated[str | None, Field(max_length=MAX_PROMPT_CHARS)] = None,
    system: Annotated[str | None, Field(max_length=MAX_PROMPT_CHARS)] = None,
    providers: Annotated[list[Name] | None, Field(description="Default: the best max_providers.",
                                                  max_length=32)] = None,
    max_providers: Annotated[int, Field(ge=2), Guard(le=32)] = 3,
    method: Method | None = None,
    threshold: Annotated[float, Field(description="Agreement needed for consensus.", gt=0, le=1,
                                      allow_inf_nan=False)] = 0.8,
    choices: Annotated[list[Annotated[str, Field(max_length=200)]] | None, Field(max_length=50)] = None,
    answer_path: Annotated[str | None, Field(description='JSON field to compare, e.g. "verdict".',
                                             max_length=200)] = None,
    judge: Name | None = None,
    rounds: Annotated[int, Field(description="Revision rounds (synthesize).", ge=0, le=3)] = 0,
    samples_per_provider: Annotated[int, Field(ge=1, le=10)] = 1,
    deadline_s: Annotated[float | None, Field(description="Soft: answer with what arrived."),
                          Guard(gt=0, le=600)] = None,
    hard_deadline_s: Annotated[float | None, Guard(gt=0, le=1200)] = None,
    max_tokens: Annotated[int, Guard(ge=1, le=200_000)] = 1024,
    temperature: Annotated[float | None, Field(ge=0, le=2, allow_inf_nan=False)] = None,
    pattern: PatternName | None = None,
    variables: Variables | None = None,
    host: Annotated[bool, Field(description="Your model answers too (sampling).")] = False,
) -> ConsensusResult:
    deps = dependencies(ctx)
    check_variables_size(variables)
    ask = ConsensusRequest(
        prompt=prompt, system=system, providers=providers, max_providers=max_providers, method=method,
        threshold=threshold, choices=tuple(choices or ()), answer_path=answer_path, judge=judge, rounds=rounds,
        samples_per_provider=samples_per_provider, deadline_s=deadline_s, hard_deadline_s=hard_deadline_s,
        max_tokens=max_tokens, temperature=temperature, pattern=pattern, variables=variables,
        host=None if host_reply is None else host_answer(host_reply),
    )
    if AS_TASK.get():  # a durable run; the task follows it
        if deps.workflows is None:
            raise ToolError("consensus runs as a task only where workflows run")
        with core_errors():
            return TaskStarted(run_id=await start_consensus_run(deps.workflows, deps.consensus, ask, caller(ctx)))
    with core_errors():
        return await deps.consensus.run(ask, ctx.report_progress, principal=caller(ctx))


def tool() -> Tool:
    """The ``consensus`` tool."""
    return make_tool(
        consensus_tool,
        name="consensus",
        description=DESCRIPTION,
        annotations=ToolAnnotations(title="Consensus of several models", read_only_hint=False,
                                    destructive_hint=False, idempotent_hint=False, open_world_hint=True),
        render=render,
    )


MAX_RENDERED_ANSWER_CHARS = 300


def render(result: ConsensusResult) -> str:
    """The text content of a result: the verdict and answer, each answerer in one short line, the totals."""
    lines = [f"{result.status} (agreement {result.agreement:.2f}, threshold {result.threshold:.2f}, "
             f"{result.method}): {result.answer if result.answer is not None else '(no answer)'}"]
    for response in result.responses:
        said = response.answer if response.status == "ok" else response.error_class or response.status
        lines.append(f"- {response.provider}: {_clip(said or '')}")
    if result.missing:
        lines.append(f"missing at the deadline: {', '.join(result.missing)}")
    lines.append(f"[{result.usage.get('input_tokens', 0)}+{result.usage.get('output_tokens', 0)} tokens · "
                 f"${result.cost_usd:.6f} · {result.latency_ms:.0f} ms]")
    return "\n".join(lines)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_RENDERED_ANSWER_CHARS else text[:MAX_RENDERED_ANSWER_CHARS - 1] + "…"
