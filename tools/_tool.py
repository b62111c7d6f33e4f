"""The tool object every tool of this server is: the SDK's ``Tool`` with strict arguments, plain-worded argument
errors, compact schemas, a readable text rendering of its result, and a span per call.

:class:`SurfaceTool` subclasses the SDK's public ``Tool`` and overrides its public ``run``; the schemas it
publishes are the compact forms of :mod:`tools._schema` (``Tool.parameters``, a public field the SDK reads live,
and the output schema of a ``FuncMetadata`` built in the SDK's documented hand-built form).
"""

import time
from collections.abc import Callable, Collection, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from server.operations.telemetry import SPAN_TOOL, span
from tools._arguments import unknown_arguments, validation_message
from tools._errors import core_errors, guarded
from tools._schema import input_schema, result_schema

_call_started: ContextVar[float | None] = ContextVar("tool_call_started", default=None)


def call_started() -> float:
    """``time.perf_counter()`` when the current tool call reached its tool (before its arguments were checked);
    ``overhead_ms`` counts from here, so whatever the call waited for before its body ran is counted too."""
    started = _call_started.get()
    return time.perf_counter() if started is None else started


class TaskStarted(BaseModel):
    """What a tool returns instead of its result when it started its work as an MCP task
    (:data:`tools._context.AS_TASK`): the durable run the task follows."""

    run_id: str


class SurfaceTool(Tool):
    """A tool of this server (build it with :func:`make_tool`)."""

    render: Callable[[Any], str] | None = Field(default=None, exclude=True)
    """The text content for a result (the structured content carries the whole result); default: its JSON."""
    detail: tuple[str, ...] = Field(default=(), exclude=True)
    """The result's fields whose nested records the output schema spells out (see :func:`make_tool`)."""
    redirects: dict[str, str] = Field(default_factory=dict, exclude=True)
    """Unknown argument name -> what its refusal says instead of the closest valid name (the tool that takes it)."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        """Run the tool, refusing arguments the input schema does not declare.

        Raises:
            ToolError: an unknown argument (named, with the closest valid one) or an argument that fails
                validation (its path, what was given and what is allowed); or the tool's own ``ToolError``.
        """
        token = _call_started.set(time.perf_counter())
        try:
            problem = unknown_arguments(arguments, self.parameters)
            redirected = next((self.redirects[name] for name in arguments if name in self.redirects), None)
            if problem is not None and redirected is not None:
                raise ToolError(f"{self.name}: {redirected}")
            if problem is not None:
                raise ToolError(f"{self.name}: {problem}")
            try:
                await _stored_state(context)
                result = await self._traced_run(arguments, context)
            except ToolError as exc:
                if isinstance(exc.__cause__, ValidationError):  # the arguments, not the tool, failed
                    message = validation_message(exc.__cause__, arguments, self.parameters)
                    raise ToolError(f"{self.name}: {message}") from exc.__cause__
                raise
        finally:
            _call_started.reset(token)
        return self.convert(result) if convert_result else result

    async def _traced_run(self, arguments: dict[str, Any], context: Any) -> Any:
        telemetry = _telemetry(context)
        if telemetry is None:
            return await super().run(arguments, context)
        with span(telemetry, SPAN_TOOL.format(name=self.name), {"gen_ai.tool.name": self.name}):
            return await super().run(arguments, context)

    def convert(self, result: Any) -> Any:
        """The ``CallToolResult`` for what the tool function returned: a model's fields once, as structured
        content without its ``None`` fields (compact; the output schema leaves them out of ``required``), and
        a short text (:attr:`render`, else the compact JSON). An input-required round (a resolver asking the
        client, 2026-07-28) goes out as it is."""
        if isinstance(result, CallToolResult | InputRequiredResult) or not isinstance(result, BaseModel):
            return self.fn_metadata.convert_result(result)
        rendered = self.render is not None and not isinstance(result, TaskStarted)
        text = self.render(result) if rendered else result.model_dump_json(by_alias=True,
                                                                                            exclude_none=True)
        return CallToolResult(content=[TextContent(type="text", text=text)],
                              structured_content=result.model_dump(mode="json", by_alias=True, exclude_none=True))


def _telemetry(context: Any) -> Any:
    return _dependency(context, "telemetry")


async def _stored_state(context: Any) -> None:
    """Wait for the server's stored state (:class:`server.app.warmup.Readiness`) before the first call that
    needs it; ``overhead_ms`` counts the wait (time the server spent)."""
    readiness = _dependency(context, "readiness")
    if readiness is not None and not readiness.ready:
        with core_errors():
            await readiness.wait()


def _dependency(context: Any, name: str) -> Any:
    try:
        return getattr(context.request_context.lifespan_context, name, None)
    except (AttributeError, ValueError):  # no request context (a call made outside a session)
        return None


def make_tool(fn: Callable[..., Any], *, name: str, description: str, annotations: ToolAnnotations,
              render: Callable[[Any], str] | None = None, detail: Collection[str] = (),
              redirects: Mapping[str, str] | None = None) -> SurfaceTool:
    """A :class:`SurfaceTool` from ``fn`` (its signature gives the arguments, its return annotation the result),
    with compact input and output schemas (:mod:`tools._schema`).

    Args:
        render: the text content for a result (see :attr:`SurfaceTool.render`).
        detail: the result's fields whose nested records the output schema spells out field by field (the
            others it types as objects; see :func:`tools._schema.output_schema`).
        redirects: unknown argument names that belong to another tool -> the refusal that names it.
    """
    description = " ".join(description.split())  # one paragraph: line breaks are only source formatting
    # The SDK derives no output schema here (structured_output=False): it would write the whole nested schema
    # that result_schema outlines; the metadata built below is the SDK's hand-built kind, validated alike.
    tool = SurfaceTool.from_function(fn, name=name, description=description, annotations=annotations,
                                     structured_output=False)
    tool.fn = guarded(tool.fn, tool.is_async)  # a domain error with its message, a bug as internal error (ref …)
    tool.render = render
    tool.detail = tuple(detail)
    tool.redirects = dict(redirects or {})
    tool.parameters = input_schema(tool.parameters)
    result = result_model(fn)
    tool.fn_metadata = FuncMetadata(arg_model=tool.fn_metadata.arg_model, output_model=result,
                                    output_schema=result_schema(result, detail))
    return tool


def result_model(fn: Callable[..., Any]) -> type[BaseModel]:
    """The model a tool function's result is: its return annotation, a pydantic model, or the model annotated
    on a ``CallToolResult`` it builds itself (``Annotated[CallToolResult, Model]``, the SDK's form).

    Raises:
        TypeError: any other return annotation (every tool of this server returns structured content).
    """
    returned = get_type_hints(fn, include_extras=True).get("return")
    if get_origin(returned) is Annotated and get_args(returned)[0] is CallToolResult:
        returned = get_args(returned)[1]
    if not (isinstance(returned, type) and issubclass(returned, BaseModel)):
        raise TypeError(f"{fn.__name__} returns {returned!r}: a tool returns a pydantic model, or "
                        "Annotated[CallToolResult, Model]")
    return returned
