"""In-memory :class:`~server.store.PatternStore` (tests, and the base of simple mode's JSON-file store)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from server.store.records import PatternRecord

_WORD = re.compile(r"[^\W_]+")
# Field weights as in the SQLite store's bm25 (name, description, tags, template).
_WEIGHTS = (10.0, 4.0, 4.0, 1.0)


class MemoryPatterns:
    """Every version of every pattern in ``patterns`` (name -> versions, oldest first)."""

    def __init__(self) -> None:
        self.patterns: dict[str, list[PatternRecord]] = {}

    async def put_pattern(self, record: PatternRecord, *, keep_registered: bool = False
                          ) -> tuple[PatternRecord, bool]:
        """Store the next version (no await inside: atomic on the event loop)."""
        history = self.patterns.get(record.name, [])
        current = history[-1] if history else None
        if current is not None and (keep_registered and current.source != "builtin" or current.same_content(record)):
            return current, False
        stored = dataclasses.replace(record, version=len(history) + 1,
                                     created_at=record.updated_at if current is None else current.created_at)
        self.patterns.setdefault(record.name, []).append(stored)
        return stored, True

    async def get_pattern(self, name: str, version: int | None = None) -> PatternRecord | None:
        history = self.patterns.get(name, [])
        if version is None:
            return history[-1] if history else None
        return history[version - 1] if 1 <= version <= len(history) else None

    async def pattern_versions(self, name: str) -> list[int]:
        return [r.version for r in self.patterns.get(name, [])]

    async def list_patterns(self) -> list[PatternRecord]:
        return [self.patterns[name][-1] for name in sorted(self.patterns)]

    async def search_patterns(self, terms: Sequence[str], tags: Sequence[str], limit: int
                              ) -> list[tuple[PatternRecord, float]]:
        """The SQLite store's passes for narrow terms (every term anywhere, then some term in name, description
        or tags), scored by weighted word counts; no stemming, no broad-term handling: simple mode's libraries
        are small."""
        candidates = [r for r in await self.list_patterns() if set(tags) <= set(r.tags)]
        if not terms:
            return [(record, 0.0) for record in candidates[:limit]]
        words = {r.name: [_WORD.findall(text.lower()) for text in _fields(r)] for r in candidates}
        last = len(terms) - 1
        prefix = not any(terms[last] in field for fields in words.values() for field in fields)

        def hits(term_index: int, field: list[str]) -> int:
            term = terms[term_index]
            return sum(1 for w in field if w == term or prefix and term_index == last and w.startswith(term))

        chosen = [i for i in range(len(terms)) if any(hits(i, f) for fs in words.values() for f in fs)]
        passes = [(4, True)] + ([(3, False)] if len(chosen) > 1 else [])
        found: list[tuple[PatternRecord, float]] = []
        for fields, every in passes:
            ranked = []
            for record in candidates:
                if any(record.name == r.name for r, _ in found):
                    continue
                counts = [[hits(i, f) for f in words[record.name][:fields]] for i in chosen]
                if chosen and (all if every else any)(any(c) for c in counts):
                    ranked.append((record, float(sum(w * c for per_term in counts
                                                     for w, c in zip(_WEIGHTS, per_term, strict=False)))))
            ranked.sort(key=lambda hit: (-hit[1], hit[0].name))
            floor = found[-1][1] if found else None
            found += [(r, sc if floor is None else min(sc, floor)) for r, sc in ranked[:limit - len(found)]]
            if len(found) >= limit:
                break
        return found

    async def pattern_names(self, prefix: str, limit: int) -> list[str]:
        return [name for name in sorted(self.patterns) if name.startswith(prefix)][:limit]


def _fields(record: PatternRecord) -> tuple[str, str, str, str]:
    """The searched fields, in weight order: name, description, tags (and domain), template."""
    domain = record.metadata.get("domain")
    return (record.name, record.description,
            " ".join(record.tags) + (f" {domain}" if isinstance(domain, str) else ""), record.template)
