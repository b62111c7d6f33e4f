"""The ``register_pattern`` and ``search_patterns`` tools."""

from __future__ import annotations

import logging
from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field, JsonValue

from knowledge import Pattern, validate_spec
from knowledge.copilot import copilot_path
from knowledge.model import MAX_DESCRIPTION_CHARS, NAME_PATTERN
from knowledge.template import MAX_TEMPLATE_CHARS
from server.models import DeferredModel
from tools._context import core_errors, dependencies, make_tool, require_role

logger = logging.getLogger(__name__)
INDEX_URI = "knowledge://patterns"

REGISTER_DESCRIPTION = """Save a reusable prompt pattern (create it, or update it as a new version). Needs role admin
on a server with authentication.

A pattern is a template with {{ variable }} placeholders ({{ user.email }} reads a key of a JSON object);
no logic, filters or expressions; write \\{{ for a literal "{{". Pass `variables` to describe each one
(description, required, default, choices); leave it out and every placeholder becomes a required variable.
Every declared variable must appear in the template and every placeholder must be declared.
Put `domain` and `tags` in `metadata` so search_patterns finds it; `apply_to` globs (e.g. "**/*.py")
scope a pattern without variables when it is exported as GitHub Copilot instructions.

The pattern becomes at once the MCP prompt `name` (arguments = its variables), the resource
knowledge://patterns/{name} and a Copilot file; orchestrate(pattern=name, variables={...}) runs it.
Updating stores a new version (old ones stay readable at knowledge://patterns/{name}/versions/{n});
registering identical content stores nothing (changed=false). A registered pattern overrides a built-in
one of the same name."""

SEARCH_DESCRIPTION = """Find prompt patterns in the library by topic, ranked best first.

`query` is free text matched against names, descriptions, tags and templates (a match in the name counts
most; the last word also matches as a prefix); `tags` keeps only patterns carrying every tag. With neither,
lists patterns by name. Each result gives the name, description, variables, tags and score; run one with
orchestrate(pattern=name, variables={...}), read it in full at knowledge://patterns/{name}, or use it as the
MCP prompt of that name."""


class VariableInput(DeferredModel):
    """A variable declaration as a caller passes it."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$", description="As used in {{ name }}.")
    description: str = Field(default="", max_length=1_000, description="What to pass.")
    required: bool | None = Field(default=None, description="Default: true unless `default` is given.")
    default: JsonValue = Field(default=None, description="Value used when none is passed.")
    choices: list[Annotated[str, Field(max_length=200)]] | None = Field(
        default=None, max_length=100, description="Known good values (offered as completions).")


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
    name: Annotated[str, Field(description="Slug: lower-case letters, digits and '-' (e.g. code-review).",
                               pattern=NAME_PATTERN)],
    template: Annotated[str, Field(description="The prompt text with {{ variable }} placeholders.",
                                   min_length=1, max_length=MAX_TEMPLATE_CHARS)],
    description: Annotated[str, Field(description="What the pattern is for (shown in listings and search).",
                                      min_length=1, max_length=MAX_DESCRIPTION_CHARS)],
    variables: Annotated[list[VariableInput] | None, Field(
        description="Declared variables; default: inferred from the placeholders, all required.",
        max_length=64)] = None,
    metadata: Annotated[dict[str, JsonValue] | None, Field(
        description='Any JSON: "domain" (text), "tags" (list of words), "title", "copilot" (front-matter keys '
                    'such as agent/tools for the prompt file).')] = None,
    apply_to: Annotated[list[Annotated[str, Field(max_length=256)]] | None, Field(
        description='Globs for Copilot instructions, e.g. ["**/*.py", "src/**"].', max_length=20)] = None,
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
    query: Annotated[str, Field(description="Words describing what you need, e.g. 'review a pull request'.",
                                max_length=500)] = "",
    tags: Annotated[list[Annotated[str, Field(max_length=40)]] | None, Field(
        description="Only patterns with all of these tags.", max_length=10)] = None,
    limit: Annotated[int, Field(description="Most results to return.", ge=1, le=50)] = 10,
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
