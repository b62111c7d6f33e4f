"""Knowledge patterns: the registry, template rendering, GitHub Copilot export and the built-in library.

A pattern is a named, versioned prompt template with ``{{ variable }}`` placeholders (see
:mod:`knowledge.template` for the rules). The MCP surface (``tools/patterns.py``, ``resources/``,
``prompts/``) and the orchestration services use this package; it reaches storage only through
:class:`server.store.Store`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knowledge.errors import (
    CopilotFormatError,
    InvalidPattern,
    PatternError,
    PatternNotFound,
    RenderError,
    TemplateSyntaxError,
)
from knowledge.model import Pattern, PatternSpec, Variable, validate_spec
from knowledge.registry import PatternRegistry, Registered, Rendered, SearchHit, render_pattern
from server.errors import InvalidRequest

__all__ = [
    "CopilotFormatError", "InvalidPattern", "Pattern", "PatternError", "PatternNotFound", "PatternRegistry",
    "PatternSpec", "Registered", "RenderError", "Rendered", "ResolvedPrompt", "SearchHit", "TemplateSyntaxError",
    "Variable", "render_pattern", "resolve_prompt", "validate_spec",
]


@dataclass(frozen=True, slots=True)
class ResolvedPrompt:
    """The prompt a service sends: given directly, or rendered from a pattern (then ``pattern``/``version``)."""

    text: str
    pattern: str | None = None
    version: int | None = None


async def resolve_prompt(registry: PatternRegistry | None, prompt: str | None, pattern: str | None,
                         variables: Mapping[str, Any] | None) -> ResolvedPrompt:
    """``prompt`` as it is, or ``pattern`` rendered with ``variables``: exactly one of the two must be given.

    For services that take ``prompt`` or (``pattern``, ``variables``) — ``orchestrate``, ``consensus``.

    Raises:
        server.errors.InvalidRequest: both or neither given, or ``variables`` without ``pattern``.
        PatternNotFound / RenderError: as :meth:`PatternRegistry.render` (the message names the variable).
    """
    if (prompt is None) == (pattern is None):
        raise InvalidRequest("pass either `prompt` (the text to send) or `pattern` (a pattern name, with its "
                         "`variables`), not both" if prompt is not None else
                         "pass `prompt` (the text to send), or `pattern` (a pattern name) with its `variables`")
    if pattern is None:
        if variables:
            raise InvalidRequest("`variables` only go with `pattern`: pass a pattern name, or drop `variables`")
        return ResolvedPrompt(prompt or "")
    if registry is None:
        raise InvalidRequest("patterns are not available in this server")
    rendered = await registry.render(pattern, variables or {})
    return ResolvedPrompt(rendered.text, rendered.pattern, rendered.version)
