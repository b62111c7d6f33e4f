"""Asking the client's own model through MCP sampling before a tool body runs (the SDK's resolver hook,
``Annotated[…, Resolve(fn)]`` with ``fn`` returning :class:`mcp.server.mcpserver.Sample`).

Sampling (``sampling/createMessage``, MCP 2025-11-25 "Sampling") is deprecated by SEP-2577: it is offered to the
clients that declare it and nothing essential rests on it. How the question travels follows the protocol era:

- 2026-07-28: the resolver returns the ``Sample``; the SDK answers the call with an input-required round and
  injects the client's ``CreateMessageResult`` when the call is retried with it. A client that refuses ends its
  own call (its SDK raises on the refusal), so the server never sees a refusal in this era.
- handshake era (up to 2025-11-25): the question is sent here, over the request's back-channel
  (``ServerSession.send_request``, as the SDK's own resolver path sends it), so that a refusal (the client's
  error answer) becomes a :class:`~server.consensus.host.HostAnswer` without text, and the consensus goes on
  without the host's model and says so, where the SDK's path would fail the whole call.

A client that did not declare ``sampling`` is refused with -32021 (``MISSING_REQUIRED_CLIENT_CAPABILITY``) in
both eras, before anything is sent.
"""

import time

from mcp import MCPError
from mcp.server.mcpserver import Context, Sample
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    ClientCapabilities,
    CreateMessageRequest,
    CreateMessageResult,
    MissingRequiredClientCapabilityErrorData,
    SamplingCapability,
    SamplingMessage,
    TextContent,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from server.consensus.host import HostAnswer
from server.pool.providers import CompletionRequest
from server.security.redact import short_detail


async def ask_host(ctx: Context, request: CompletionRequest) -> Sample | HostAnswer:
    """The client's model asked ``request`` (already screened): a ``Sample`` for the SDK to ask (2026-07-28),
    or its answer (handshake era; a refusal is an answer without text).

    Raises:
        MCPError: -32021, the client did not declare the sampling capability.
    """
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.sampling is None:
        required = ClientCapabilities(sampling=SamplingCapability())
        raise MCPError(code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                       message="host: the client did not declare the sampling capability, so its model cannot "
                               "join the consensus",
                       data=MissingRequiredClientCapabilityErrorData(required_capabilities=required).model_dump(
                           by_alias=True, mode="json", exclude_none=True))
    sample = Sample([SamplingMessage(role="assistant" if m.role == "assistant" else "user",
                                     content=TextContent(type="text", text=m.content)) for m in request.messages],
                    max_tokens=request.max_tokens, system_prompt=request.system, temperature=request.temperature)
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return sample
    started = time.perf_counter()
    try:
        result = await ctx.session.send_request(CreateMessageRequest(params=sample.params), CreateMessageResult,
                                                metadata=ServerMessageMetadata(related_request_id=ctx.request_id))
    except MCPError as exc:
        return HostAnswer(None, refusal=f"the client refused: {short_detail(exc.error.message)}")
    return host_answer(result, (time.perf_counter() - started) * 1000)


def host_answer(result: CreateMessageResult | HostAnswer, latency_ms: float | None = None) -> HostAnswer:
    """A client's ``CreateMessageResult`` as the consensus takes it (anything but text is no answer)."""
    if not isinstance(result, CreateMessageResult):
        return result  # already a HostAnswer (a refusal, or asked in the handshake era)
    model = short_detail(result.model)[:200] or None
    if not isinstance(result.content, TextContent) or not result.content.text.strip():
        return HostAnswer(None, model=model, refusal=f"the client's model gave no text ({result.content.type})")
    return HostAnswer(result.content.text, model=model, latency_ms=latency_ms)
