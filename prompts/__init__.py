"""MCP prompts: every knowledge pattern is a prompt whose arguments are its variables.

Prompts are objects on the ``MCPServer``; :class:`PatternPrompts` keeps them in step with the pattern library
(all of it when a lifespan starts, then each pattern the registry stores). Listing comes from those objects;
``prompts/get`` renders the pattern's *current* stored version, so it is never stale even when another
replica changed the pattern. Argument completion offers a variable's ``choices`` and its default.
"""

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.prompts.base import Message, Prompt, PromptArgument, UserMessage
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, Completion, CompletionArgument, CompletionContext, PromptReference
from pydantic import Field

from knowledge import Pattern, PatternError, PatternNotFound
from knowledge.template import parse
from server.dependencies import Dependencies

MAX_COMPLETIONS = 100  # the MCP limit per completion result
_DOTTED = re.compile(r"\{\{\s*[A-Za-z][A-Za-z0-9_]*\.")


class PatternPrompt(Prompt):
    """A pattern as an MCP prompt: rendering goes through the registry (one user message)."""

    dependencies: Callable[[], Dependencies] = Field(exclude=True)

    async def render(self, arguments: dict[str, Any] | None, context: Any) -> list[Message]:  # type: ignore[override]
        """The pattern rendered with ``arguments`` (text; a JSON object where a dotted path needs one).

        Raises:
            MCPError: invalid params: unknown pattern, missing or unknown variable (named in the message).
        """
        try:
            rendered = await self.dependencies().patterns.render(self.name, arguments or {})
        except PatternError as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from exc
        return [UserMessage(rendered.text)]


def prompt_arguments(pattern: Pattern) -> list[PromptArgument]:
    """The prompt arguments of ``pattern``: its variables, with descriptions saying what shape and default."""
    # Parsing is only needed to describe object-valued variables; most templates have no dotted path.
    dotted = pattern.variables and _DOTTED.search(pattern.template)
    keys_used = parse(pattern.template).keys_used() if dotted else {}
    arguments = []
    for variable in pattern.variables or ():
        notes = []
        keys = keys_used.get(variable.name)
        if keys:
            notes.append(f"a JSON object with {', '.join(keys)}")
        if variable.default not in (None, ""):
            notes.append(f"default: {_short(variable.default)}")
        description = variable.description + (f" ({'; '.join(notes)})" if notes else "")
        arguments.append(PromptArgument(name=variable.name, description=description.strip() or None,
                                        required=bool(variable.required)))
    return arguments


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:59] + "…"


class PatternPrompts:
    """The MCP prompts of one server, one per pattern.

    Args:
        mcp: the server whose prompts these are.
        dependencies: the running server's dependencies (prompt rendering reads the registry through it).
    """

    def __init__(self, mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> None:
        self._mcp = mcp
        self._dependencies = dependencies
        self._names: set[str] = set()

    def replace_all(self, patterns: Iterable[Pattern]) -> None:
        """Make the prompts exactly the given patterns (a new lifespan may bring another store)."""
        patterns = list(patterns)
        for gone in self._names - {p.name for p in patterns}:
            self._mcp.remove_prompt(gone)
            self._names.discard(gone)
        for pattern in patterns:
            self.upsert(pattern)

    def upsert(self, pattern: Pattern) -> None:
        """Add or replace the prompt of ``pattern`` (``add_prompt`` keeps an existing one, so remove first)."""
        if pattern.name in self._names:
            self._mcp.remove_prompt(pattern.name)
        title = pattern.metadata.get("title")
        self._mcp.add_prompt(PatternPrompt(
            name=pattern.name, title=title if isinstance(title, str) else None, description=pattern.description,
            arguments=prompt_arguments(pattern), fn=_never_called, dependencies=self._dependencies))
        self._names.add(pattern.name)


async def _never_called(**_: Any) -> str:  # pragma: no cover - PatternPrompt.render replaces the fn path
    raise RuntimeError("PatternPrompt renders through the registry")


def register(mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> PatternPrompts:
    """Set up the pattern prompts of ``mcp`` (filled when a lifespan starts; see :mod:`server.app.assembly`)."""
    return PatternPrompts(mcp, dependencies)


async def complete(deps: Dependencies, ref: Any, argument: CompletionArgument,
                   context: CompletionContext | None) -> Completion | None:
    """Completions for a pattern prompt's argument: its ``choices`` and default that start with what was typed.

    Returns ``None`` for references that are not pattern prompts.
    """
    if not isinstance(ref, PromptReference):
        return None
    try:
        pattern = await deps.patterns.get(ref.name)
    except PatternNotFound:
        return None
    variable = next((v for v in pattern.variables or () if v.name == argument.name), None)
    if variable is None:
        return Completion(values=[])
    known = list(variable.choices or ())
    if isinstance(variable.default, str) and variable.default and variable.default not in known:
        known.append(variable.default)
    typed = argument.value.lower()
    values = [v for v in known if v.lower().startswith(typed)]
    return Completion(values=values[:MAX_COMPLETIONS], total=len(values), has_more=len(values) > MAX_COMPLETIONS)
