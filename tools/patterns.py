"""The ``register_pattern`` and ``search_patterns`` tools."""

import logging
from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict, Field, JsonValue

from knowledge import Pattern, validate_spec
from knowledge.copilot import copilot_path
from knowledge.model import MAX_DESCRIPTION_CHARS, NAME_PATTERN
from knowledge.template import MAX_TEMPLATE_CHARS
from server.models import DeferredModel
from server.security import caller
from tools._arguments import Guard
from tools._context import core_errors, dependencies, make_tool, require_role

logger = logging.getLogger(__name__)
INDEX_URI = "knowledge://patterns"

REGISTER_DESCRIPTION = """Save a prompt pattern (a new version if the name exists). Placeholders: {{ variable }},
{{ a.b }} for a JSON key; no logic. It becomes an MCP prompt and the resource knowledge://patterns/{name}.
Needs admin."""

SEARCH_DESCRIPTION = """Find saved prompt patterns by words and tags, best first; run one with
orchestrate(pattern=name, variables={...})."""


class VariableInput(DeferredModel):
    """A variable declaration as a caller passes it."""

    model_config = ConfigDict(defer_build=True, extra="forbid")  # a misspelled field is refused, not dropped

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    description: str = Field(default="", max_length=1_000)
    required: bool | None = Field(default=None, description="Default: true unless a default is given.")
    default: JsonValue = None  # any JSON value
    choices: list[Annotated[str, Field(max_length=200)]] | None = Field(default=None, max_length=100)


class VariableOutput(DeferredModel):
    name: str
    description: str
    required: bool
    default: JsonValue = None


class RegisterResult(DeferredModel):
    """The pattern as stored."""

    name: str
    version: int = Field(description="1 when new; each change adds one")
    changed: bool = Field(description="false when the content equalled the current version (nothing stored)")
    kind: str = Field(description="template (has variables) or guidance (none)")
    variables: list[VariableOutput]
    uri: str = Field(description="resource with the current version")
    version_uri: str = Field(description="resource with exactly this version")
    prompt: str = Field(description="the MCP prompt's name")
    copilot_file: str = Field(description="where the GitHub Copilot export puts it")


class SearchResult(DeferredModel):
    """A summary: enough to choose a pattern and call it (the full pattern is at knowledge://patterns/{name})."""

    name: str
    description: str
    variables: list[str]
    tags: list[str]
    score: float = Field(description="higher is better; 0 without a query")


class SearchResults(DeferredModel):
    query: str
    tags: list[str]
    results: list[SearchResult]


async def register_pattern(
    ctx: Context,
    name: Annotated[str, Field(pattern=NAME_PATTERN)],
    template: Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)],
    description: Annotated[str, Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)],
    variables: Annotated[list[VariableInput] | None, Field(
        description="Default: every placeholder, required.", max_length=64)] = None,
    metadata: Annotated[dict[str, JsonValue] | None, Field(
        description="Any JSON; domain and tags feed search.")] = None,
    apply_to: Annotated[list[Annotated[str, Field(max_length=256)]] | None, Field(
        description='Copilot globs, e.g. "**/*.py".', max_length=20)] = None,
) -> RegisterResult:
    require_role(ctx, "admin", "register_pattern")
    deps = dependencies(ctx)
    with core_errors():
        spec = validate_spec({
            "name": name, "template": template, "description": description,
            "variables": None if variables is None else [v.model_dump(exclude_none=True) for v in variables],
            "metadata": metadata or {}, "apply_to": apply_to or [],
        })
        outcome = await deps.patterns.register(spec)
    if outcome.changed:
        if deps.audit is not None:
            pattern = outcome.pattern
            await deps.audit.record("pattern.registered", actor=caller(ctx).id, subject=f"pattern:{pattern.name}",
                                    id=f"pattern:{pattern.name}:v{pattern.version}",
                                    outputs={"template": template, "description": description},
                                    detail={"version": pattern.version})
        await announce_change(ctx, outcome.pattern)
    return _registered(outcome.pattern, outcome.changed)


def _registered(pattern: Pattern, changed: bool) -> RegisterResult:
    return RegisterResult(
        name=pattern.name, version=pattern.version, changed=changed, kind=pattern.kind,
        variables=[VariableOutput(name=v.name, description=v.description, required=bool(v.required),
                                  default=v.default) for v in pattern.variables or ()],
        uri=pattern.uri, version_uri=pattern.version_uri, prompt=pattern.name, copilot_file=copilot_path(pattern))


async def announce_change(ctx: Context, pattern: Pattern) -> None:
    """Tell clients the prompt and resource lists changed, in the caller's protocol era.

    2026-07-28: events on the server's subscription bus reach every client listening on
    ``subscriptions/listen`` (with ``promptsListChanged`` / ``resourcesListChanged`` / the URIs). Handshake era:
    ``notifications/*/list_changed`` on the calling session (the SDK has no fan-out to other sessions there).
    A client that is gone must not fail the registration, hence the broad catch (logged).
    """
    try:
        await ctx.notify_prompts_changed()
        await ctx.notify_resources_changed()
        for uri in (pattern.uri, INDEX_URI):
            await ctx.notify_resource_updated(uri)
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            await ctx.session.send_prompt_list_changed()
            await ctx.session.send_resource_list_changed()
    except Exception:  # noqa: BLE001 - notification delivery is best effort by design
        logger.warning("could not send list-changed notifications for pattern %s", pattern.name, exc_info=True)


async def search_patterns(
    ctx: Context,
    query: Annotated[str, Field(max_length=500)] = "",
    tags: Annotated[list[Annotated[str, Field(max_length=40)]] | None, Field(
        description="Only patterns with all of these.", max_length=10)] = None,
    limit: Annotated[int, Guard(ge=1, le=50)] = 10,
) -> SearchResults:
    deps = dependencies(ctx)
    with core_errors():
        hits = await deps.patterns.search(query, tags or (), limit)
    return SearchResults(query=query, tags=[t.lower() for t in tags or ()], results=[SearchResult(
        name=h.pattern.name, description=h.pattern.description, variables=[v.name for v in h.pattern.variables or ()],
        tags=list(h.pattern.tags), score=h.score) for h in hits])


def register_tool() -> Tool:
    """The ``register_pattern`` tool."""
    return make_tool(register_pattern, name="register_pattern", description=REGISTER_DESCRIPTION,
                     annotations=ToolAnnotations(title="Save a prompt pattern", read_only_hint=False,
                                                 destructive_hint=False, idempotent_hint=False,
                                                 open_world_hint=False))


def search_tool() -> Tool:
    """The ``search_patterns`` tool."""
    return make_tool(search_patterns, name="search_patterns", description=SEARCH_DESCRIPTION,
                     annotations=ToolAnnotations(title="Find prompt patterns", read_only_hint=True,
                                                 destructive_hint=False, idempotent_hint=True,
                                                 open_world_hint=False))
