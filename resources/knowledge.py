"""The pattern library as MCP resources.

| URI | content |
| --- | --- |
| ``knowledge://patterns`` | index: every pattern's name, version, kind, description, tags, variables, URI (JSON) |
| ``knowledge://patterns/{name}`` | the current version in full (JSON); one listed resource per pattern |
| ``knowledge://patterns/{name}/versions/{version}`` | an earlier (or the current) version (JSON) |
| ``knowledge://exports/copilot-instructions`` | the repository-wide ``.github/copilot-instructions.md`` |
| ``knowledge://exports/copilot/{name}`` | the pattern's own Copilot file (instructions or prompt file) |

Every read goes to the store: content is never stale. The listed per-pattern resources are kept in step with
the library by :class:`PatternResources` (the SDK offers no way to remove a listed resource, so one whose
pattern is gone, which only a new lifespan on another store can cause, answers "not found").
"""

import json
from collections.abc import Callable, Iterable
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.resources.base import Resource
from mcp_types import Completion, CompletionArgument, CompletionContext, ResourceTemplateReference
from pydantic import Field

from knowledge import Pattern, PatternError, PatternNotFound
from knowledge.model import URI_PREFIX
from server.dependencies import Dependencies

INDEX_URI = "knowledge://patterns"
PATTERN_TEMPLATE = URI_PREFIX + "{name}"
VERSION_TEMPLATE = URI_PREFIX + "{name}/versions/{version}"
COPILOT_INSTRUCTIONS_URI = "knowledge://exports/copilot-instructions"
COPILOT_FILE_TEMPLATE = "knowledge://exports/copilot/{name}"
MAX_COMPLETIONS = 100


def pattern_document(pattern: Pattern) -> dict[str, Any]:
    """A pattern version as the resource shows it (JSON-ready)."""
    from knowledge.copilot import copilot_path  # the Copilot export loads at the first read, not at start-up

    return {
        "name": pattern.name, "version": pattern.version, "versions": list(range(1, pattern.version + 1)),
        "kind": pattern.kind, "description": pattern.description, "template": pattern.template,
        "variables": [v.model_dump(exclude_none=True) for v in pattern.variables or ()],
        "metadata": pattern.metadata, "apply_to": list(pattern.apply_to), "source": pattern.source,
        "created_at": pattern.created_at, "updated_at": pattern.updated_at, "uri": pattern.uri,
        "version_uri": pattern.version_uri, "prompt": pattern.name, "copilot_file": copilot_path(pattern),
    }


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


async def _read_pattern(deps: Dependencies, name: str, version: int | None = None) -> str:
    try:
        return _json(pattern_document(await deps.patterns.get(name, version)))
    except PatternNotFound as exc:
        raise ResourceNotFoundError(str(exc)) from exc


class PatternResource(Resource):
    """The listed resource of one pattern; reads the current version from the store."""

    pattern_name: str = Field(exclude=True)
    dependencies: Callable[[], Dependencies] = Field(exclude=True)

    async def read(self) -> str:
        return await _read_pattern(self.dependencies(), self.pattern_name)


class PatternResources:
    """The listed per-pattern resources of one server.

    Args:
        mcp: the server.
        dependencies: the running server's dependencies.
    """

    def __init__(self, mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> None:
        self._mcp = mcp
        self._dependencies = dependencies
        self._by_name: dict[str, PatternResource] = {}

    def replace_all(self, patterns: Iterable[Pattern]) -> None:
        """List every given pattern (see the module note on patterns that are gone)."""
        for pattern in patterns:
            self.upsert(pattern)

    def upsert(self, pattern: Pattern) -> None:
        """List ``pattern``, or refresh its listing's title and description."""
        title = pattern.metadata.get("title") if isinstance(pattern.metadata.get("title"), str) else None
        listed = self._by_name.get(pattern.name)
        if listed is not None:
            listed.description, listed.title = pattern.description, title
            return
        listed = PatternResource(uri=pattern.uri, name=f"pattern {pattern.name}", title=title,
                                 description=pattern.description, mime_type="application/json",
                                 pattern_name=pattern.name, dependencies=self._dependencies)
        self._mcp.add_resource(listed)
        self._by_name[pattern.name] = listed


def register(mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> PatternResources:
    """Register the pattern resources on ``mcp``; returns the per-pattern listing to keep in step."""

    @mcp.resource(INDEX_URI, name="pattern-index", mime_type="application/json",
                  description="Every knowledge pattern: name, version, kind (template/guidance), description, "
                              "tags, variables and resource URI.")
    async def pattern_index() -> str:
        patterns = await dependencies().patterns.all()
        return _json({"count": len(patterns), "patterns": [{
            "name": p.name, "version": p.version, "kind": p.kind, "description": p.description,
            "tags": list(p.tags), "domain": p.metadata.get("domain"),
            "variables": [v.name for v in p.variables or ()], "uri": p.uri} for p in patterns]})

    @mcp.resource(PATTERN_TEMPLATE, name="pattern", mime_type="application/json",
                  description="A knowledge pattern's current version: template, variables, metadata, versions.")
    async def pattern_current(name: str) -> str:
        return await _read_pattern(dependencies(), name)

    @mcp.resource(VERSION_TEMPLATE, name="pattern-version", mime_type="application/json",
                  description="One version of a knowledge pattern (earlier versions stay readable).")
    async def pattern_version(name: str, version: str) -> str:
        if not version.isdigit() or len(version) > 9:
            raise ResourceNotFoundError(f"no version {version[:20]!r} of pattern '{name}': versions are 1, 2, 3 …")
        return await _read_pattern(dependencies(), name, int(version))

    @mcp.resource(COPILOT_INSTRUCTIONS_URI, name="copilot-instructions", mime_type="text/markdown",
                  description="The repository-wide .github/copilot-instructions.md for the pattern library: "
                              "which instruction and prompt files exist and what they are for.")
    async def copilot_instructions() -> str:
        from knowledge.copilot import repository_instructions

        return repository_instructions(p.spec() for p in await dependencies().patterns.all())

    @mcp.resource(COPILOT_FILE_TEMPLATE, name="copilot-file", mime_type="text/markdown",
                  description="A pattern's GitHub Copilot file: .github/instructions/NAME.instructions.md (guidance, "
                              "with applyTo) or .github/prompts/NAME.prompt.md (templates, ${input:…} variables).")
    async def copilot_pattern_file(name: str) -> str:
        from knowledge.copilot import copilot_file

        try:
            pattern = await dependencies().patterns.get(name)
            return copilot_file(pattern.spec()).content
        except PatternNotFound as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except PatternError as exc:
            raise ResourceNotFoundError(f"no Copilot file for pattern '{name}': {exc}") from exc

    return PatternResources(mcp, dependencies)


async def complete(deps: Dependencies, ref: Any, argument: CompletionArgument,
                   context: CompletionContext | None) -> Completion | None:
    """Completions for the pattern resource templates: pattern names, and a pattern's versions.

    Returns ``None`` for references that are not these templates.
    """
    if not isinstance(ref, ResourceTemplateReference) or ref.uri not in (
            PATTERN_TEMPLATE, VERSION_TEMPLATE, COPILOT_FILE_TEMPLATE):
        return None
    if argument.name == "name":
        names = await deps.patterns.names(argument.value, MAX_COMPLETIONS + 1)
        return Completion(values=names[:MAX_COMPLETIONS], has_more=len(names) > MAX_COMPLETIONS)
    if argument.name == "version" and context is not None and context.arguments:
        versions = await deps.patterns.versions(context.arguments.get("name", ""))
        values = [str(v) for v in reversed(versions) if str(v).startswith(argument.value)]
        return Completion(values=values[:MAX_COMPLETIONS], total=len(values), has_more=len(values) > MAX_COMPLETIONS)
    return Completion(values=[])
