"""The pattern registry: register (versioned), read, search and render patterns through the store interface.

One registry per server, built in the lifespan. Every read goes to the store, so a pattern registered anywhere
(another replica sharing the database) is what the next read sees; in memory it keeps only listeners and the
objects built for stored versions (a version never changes once stored).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from knowledge.errors import PatternNotFound, RenderError
from knowledge.model import TAG_PATTERN, Pattern, PatternSpec, Source
from knowledge.template import MAX_RENDERED_CHARS, parse, render
from server.store import PatternRecord, PatternStore

MAX_SEARCH_RESULTS = 50
_CACHED_VERSIONS = 4096
_MAX_TERMS = 12
_WORD = re.compile(r"[^\W_]+")

Listener = Callable[[Pattern], None]


@dataclass(frozen=True, slots=True)
class Registered:
    """The outcome of :meth:`PatternRegistry.register`: the current version, and whether this call stored it."""

    pattern: Pattern
    changed: bool


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result; ``score`` is higher for better matches (0 when no query was given)."""

    pattern: Pattern
    score: float


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered pattern: the text, and which pattern version produced it."""

    text: str
    pattern: str
    version: int


# English function words: "a pattern to review a pull request" searches for pattern, review, pull, request.
# They say nothing about what a pattern is for, and every template contains them.
_STOPWORDS = frozenset("""a about above after again all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having
he her here hers him his how i if in into is it its itself just me more most my no nor not now of off on once
only or other our ours out over own same she should so some such than that the their theirs them then there
these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours""".split())


def search_terms(query: str) -> list[str]:
    """The words of a free-text query, lower-cased, without function words (unless that leaves none); FTS
    syntax in the query is plain text here."""
    words = [w[:64] for w in _WORD.findall(query.lower())]
    meaningful = [w for w in words if w not in _STOPWORDS]
    return list(dict.fromkeys(meaningful or words))[:_MAX_TERMS]


class PatternRegistry:
    """Patterns through the store.

    Args:
        store: the server's store.
        clock: Unix seconds, for timestamps (tests pass a fixed clock).
    """

    def __init__(self, store: PatternStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._listeners: list[Listener] = []
        # A stored version never changes, so its Pattern can be kept (building one costs ~20 µs; a search
        # builds ten). Keyed by (name, version, updated_at): a version written anew elsewhere is a miss.
        self._built: OrderedDict[tuple[str, int, float], Pattern] = OrderedDict()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(pattern)`` after each change this registry stores (the MCP surface follows this way)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def register(self, spec: PatternSpec, *, source: Source = "registered") -> Registered:
        """Store ``spec`` as the pattern's next version (version 1 when new).

        Registering content identical to the current version stores nothing and returns it unchanged.
        """
        record, changed = await self._store.put_pattern(spec.to_record(source=source, now=self._clock()))
        pattern = self._pattern(record)
        if changed:
            for listener in list(self._listeners):
                listener(pattern)
        return Registered(pattern, changed)

    async def load_library(self, specs: Iterable[PatternSpec]) -> list[str]:
        """Store shipped patterns as ``builtin``, unless a registered pattern of the same name overrides them.

        An unchanged library stores nothing; a changed built-in becomes a new version. Returns the names stored.
        """
        stored = []
        for spec in specs:
            record, changed = await self._store.put_pattern(spec.to_record(source="builtin", now=self._clock()),
                                                            keep_registered=True)
            if changed:
                stored.append(spec.name)
                pattern = self._pattern(record)
                for listener in list(self._listeners):
                    listener(pattern)
        return stored

    async def get(self, name: str, version: int | None = None) -> Pattern:
        """The current version of ``name``, or the given one.

        Raises:
            PatternNotFound: no such pattern or version (the message says what exists).
        """
        record = await self._store.get_pattern(name, version)
        if record is not None:
            return self._pattern(record)
        if version is not None and await self._store.get_pattern(name) is not None:
            known = await self._store.pattern_versions(name)
            raise PatternNotFound(f"pattern '{name}' has no version {version} (versions: "
                                  f"{', '.join(map(str, known))})", pattern=name, version=version)
        raise PatternNotFound(f"no pattern named '{name}': search_patterns finds patterns by topic, and "
                              "register_pattern creates one", pattern=name, version=version)

    async def versions(self, name: str) -> list[int]:
        """Every version number of ``name``, ascending (empty when unknown)."""
        return await self._store.pattern_versions(name)

    async def all(self) -> list[Pattern]:
        """Every pattern's current version, by name."""
        return [self._pattern(r) for r in await self._store.list_patterns()]

    async def names(self, prefix: str = "", limit: int = 100) -> list[str]:
        """Pattern names starting with ``prefix`` (for argument completion)."""
        return await self._store.pattern_names(prefix, limit)

    async def search(self, query: str = "", tags: Sequence[str] = (), limit: int = 10) -> list[SearchHit]:
        """Patterns matching ``query`` that carry every tag in ``tags``, best first, at most ``limit`` (capped at
        50): those with every word of the query (function words aside) in name, description, tags or template,
        the name weighing most, then those with some of the words in name, description or tags. No query
        lists the patterns by name."""
        wanted = list(dict.fromkeys(t.strip().lower() for t in tags if t.strip()))
        if any(not re.fullmatch(TAG_PATTERN, tag) for tag in wanted):
            return []  # no stored tag can look like that
        hits = await self._store.search_patterns(search_terms(query), wanted, max(1, min(limit, MAX_SEARCH_RESULTS)))
        return [SearchHit(self._pattern(record), score) for record, score in hits]

    def _pattern(self, record: PatternRecord) -> Pattern:
        key = (record.name, record.version, record.updated_at)
        pattern = self._built.get(key)
        if pattern is None:
            pattern = self._built[key] = Pattern.from_record(record)
            if len(self._built) > _CACHED_VERSIONS:
                self._built.popitem(last=False)
        else:
            self._built.move_to_end(key)
        return pattern

    async def render(self, name: str, variables: Mapping[str, Any] | None = None, *,
                     max_chars: int = MAX_RENDERED_CHARS) -> Rendered:
        """The current version of ``name`` rendered with ``variables`` (see :func:`render_pattern`).

        Raises:
            PatternNotFound: no such pattern.
            RenderError: a missing required or unknown variable, or a value that does not fit (names it).
        """
        pattern = await self.get(name)
        return Rendered(render_pattern(pattern, variables or {}, max_chars=max_chars), pattern.name, pattern.version)


def render_pattern(pattern: Pattern, variables: Mapping[str, Any], *, max_chars: int = MAX_RENDERED_CHARS) -> str:
    """Render ``pattern`` with ``variables`` (JSON values; text that a dotted path needs as an object is decoded).

    Variables not passed take their default; optional ones without a default render as empty text.

    Raises:
        RenderError: a variable the pattern does not declare, a missing required variable (each names it and
            lists what the pattern takes), or a dotted path that leads nowhere.
    """
    declared = {v.name: v for v in pattern.variables or ()}
    takes = ", ".join(f"{v.name}{'' if v.required else '?'}" for v in declared.values()) or "no variables"
    unknown = [str(k)[:64] for k in variables if k not in declared]
    if unknown:
        raise RenderError(f"pattern '{pattern.name}' has no variable '{unknown[0]}' (it takes: {takes})",
                          variable=unknown[0], pattern=pattern.name)
    missing = [v.name for v in declared.values() if v.required and variables.get(v.name) is None]
    if missing:
        raise RenderError(f"pattern '{pattern.name}' needs variable '{missing[0]}'"
                          f"{' (and ' + ', '.join(missing[1:]) + ')' if missing[1:] else ''} (it takes: {takes})",
                          variable=missing[0], pattern=pattern.name)
    values = {name: variables[name] if variables.get(name) is not None else spec.default
              for name, spec in declared.items()}
    try:
        return render(parse(pattern.template), values, max_chars=max_chars)
    except RenderError as exc:
        raise RenderError(f"pattern '{pattern.name}': {exc}", variable=exc.variable, pattern=pattern.name) from None
