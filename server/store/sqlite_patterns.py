"""The SQLite :class:`~server.store.PatternStore`: the SQL, and :class:`SQLitePatterns` over it.

Plain functions of a ``sqlite_utils.Database``, run on the store's own thread (see
:meth:`server.store.sqlite_db.SQLiteDatabase.call`). Tables (migration ``004_patterns``): ``patterns`` holds each pattern's current
version and is indexed by FTS5 (``patterns_fts``: name, description, tags, template; porter stemming);
``pattern_versions`` holds every version.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from server.store.records import PatternRecord
from server.store.sqlite_db import SQLiteDatabase

if TYPE_CHECKING:  # imported when the store is first used (server.store.sqlite_db), not at start-up
    import sqlite_utils

# bm25 column weights, in the FTS column order (name, description, tags_text, template): a hit in the name
# says far more about what a pattern is for than one somewhere in a long template.
_BM25 = "bm25(patterns_fts, 10.0, 4.0, 4.0, 1.0)"
_COLUMNS = ("name", "version", "description", "template", "variables", "metadata", "apply_to", "tags",
            "source", "created_at", "updated_at")
_SELECT = ", ".join(f"p.{c}" for c in _COLUMNS)


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _record(row: Sequence[Any]) -> PatternRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    return PatternRecord(
        name=values["name"], version=values["version"], description=values["description"],
        template=values["template"], variables=tuple(json.loads(values["variables"] or "[]")),
        metadata=json.loads(values["metadata"] or "{}"), apply_to=tuple(json.loads(values["apply_to"] or "[]")),
        tags=tuple(json.loads(values["tags"] or "[]")), source=values["source"] or "registered",
        created_at=values["created_at"] or 0.0, updated_at=values["updated_at"] or 0.0,
    )


def _row(record: PatternRecord) -> dict[str, Any]:
    return {
        "name": record.name, "version": record.version, "description": record.description,
        "template": record.template, "variables": json.dumps(list(record.variables), ensure_ascii=False),
        "metadata": json.dumps(record.metadata, ensure_ascii=False),
        "apply_to": json.dumps(list(record.apply_to), ensure_ascii=False),
        "tags": json.dumps(list(record.tags), ensure_ascii=False), "source": record.source,
        "created_at": record.created_at, "updated_at": record.updated_at,
    }


def get(db: sqlite_utils.Database, name: str, version: int | None = None) -> PatternRecord | None:
    """The current version of ``name``, or the given one."""
    if version is None:
        sql, params = f"SELECT {_SELECT} FROM patterns p WHERE p.name = ?", [name]
    else:
        sql, params = f"SELECT {_SELECT} FROM pattern_versions p WHERE p.name = ? AND p.version = ?", [name, version]
    row = db.execute(sql, params).fetchone()
    return None if row is None else _record(row)


def put(db: sqlite_utils.Database, record: PatternRecord, keep_registered: bool) -> tuple[PatternRecord, bool]:
    """Store the next version in one transaction (see :meth:`server.store.PatternStore.put_pattern`)."""
    with db.atomic():
        current = get(db, record.name)
        if current is not None:
            if keep_registered and current.source != "builtin":
                return current, False
            if current.same_content(record):
                return current, False
        version = 1 if current is None else current.version + 1
        created_at = record.updated_at if current is None else current.created_at
        stored = dataclasses.replace(record, version=version, created_at=created_at)
        row = _row(stored)
        db.execute(f"INSERT INTO pattern_versions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                   list(row.values()))
        row["tags_text"] = " ".join(stored.tags + ((str(stored.metadata["domain"]),)
                                                   if isinstance(stored.metadata.get("domain"), str) else ()))
        if current is None:
            db.execute(f"INSERT INTO patterns ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       list(row.values()))
        else:
            # An UPDATE (not INSERT OR REPLACE): the FTS triggers follow updates; a REPLACE's implicit delete
            # would not fire the delete trigger.
            assignments = ", ".join(f"{column} = ?" for column in row if column != "name")
            db.execute(f"UPDATE patterns SET {assignments} WHERE name = ?",
                       [v for k, v in row.items() if k != "name"] + [stored.name])
    return stored, True


def versions(db: sqlite_utils.Database, name: str) -> list[int]:
    """Every version number of ``name``, ascending."""
    return [v for (v,) in db.execute("SELECT version FROM pattern_versions WHERE name = ? ORDER BY version", [name])]


def current_all(db: sqlite_utils.Database) -> list[PatternRecord]:
    """Every pattern's current version, by name."""
    return [_record(row) for row in db.execute(f"SELECT {_SELECT} FROM patterns p ORDER BY p.name")]


def search(db: sqlite_utils.Database, terms: Sequence[str], tags: Sequence[str], limit: int
           ) -> list[tuple[PatternRecord, float]]:
    """Ranked full-text search with a tag filter (see :meth:`server.store.PatternStore.search_patterns`).

    FTS5's bm25 costs one to three microseconds per matching row, plus a pass over each term's whole posting
    list for its inverse document frequency (IDF); and long templates contain most common words. So the work
    is bounded by what matches *well*, not by the library's size:

    - Each term is probed (a count capped at :data:`BROAD_MATCHES` + 1). The last term, when it matches
      nothing as a word, is taken as a prefix (a word half typed). Terms matching nothing are dropped, and so
      are "broad" terms (more than :data:`BROAD_MATCHES` patterns) when narrower ones exist, as a search
      engine drops stop words: their IDF, hence their weight in bm25, is small.
    - Narrow terms: patterns with every term anywhere, ranked by bm25 with column weights name 10,
      description 4, tags 4, template 1 (at most as many rows as the narrowest term matches); then, to fill
      up to ``limit``, patterns with some of the narrowest terms (up to :data:`BROAD_MATCHES` matches between
      them) in the name, description or tags, ranked by bm25 below the first ones.
    - Only broad terms (say, "write"): bm25 would rank thousands of rows by a near-zero IDF. Hits come by
      where every term appears — the name, then the description or tags, then anywhere, then (several terms)
      some term in the name, description or tags — newest first within each, with fixed scores 0.4 / 0.3 /
      0.2 / 0.1. Each of these walks stops once it has enough rows.
    """
    if not terms:
        tag_sql = "".join(_TAG_FILTER for _ in tags)
        rows = db.execute(f"SELECT {_SELECT}, 0.0 FROM patterns p WHERE 1 = 1{tag_sql} ORDER BY p.name LIMIT ?",
                          [*(f'"{tag}"' for tag in tags), limit])
        return [(_record(row[:-1]), 0.0) for row in rows]
    narrow: dict[str, int] = {}
    broad: list[str] = []
    for index, term in enumerate(terms):
        quoted, matches = _quote(term), _matches(db, _quote(term))
        if matches == 0 and index == len(terms) - 1 and len(term) >= 2:
            quoted += " *"
            matches = _matches(db, quoted)
        if matches > BROAD_MATCHES:
            broad.append(quoted)
        elif matches:
            narrow[quoted] = matches
    hits: list[tuple[PatternRecord, float]] = []

    def fill(found: list[tuple[PatternRecord, float]]) -> bool:
        """Add hits ranked below those found so far; True once ``limit`` is reached."""
        floor = hits[-1][1] if hits else None
        hits.extend((record, score if floor is None else min(score, floor)) for record, score in found)
        return len(hits) >= limit

    def found() -> list[str]:
        return [record.name for record, _ in hits]

    if narrow:
        if fill(_ranked(db, " AND ".join(narrow), tags, limit, [])) or len(narrow) == 1:
            return hits
        some, total = [], 0
        for quoted, matches in sorted(narrow.items(), key=lambda item: item[1]):
            if some and total + matches > BROAD_MATCHES:
                break
            some.append(quoted)
            total += matches
        fill(_ranked(db, f"{_FIELDS} : ({' OR '.join(some)})", tags, limit - len(hits), found()))
        return hits
    if not broad:
        return []
    every = " AND ".join(broad)
    tiers = [(f"name : ({every})", 0.4), (f"{_FIELDS} : ({every})", 0.3), (every, 0.2)]
    if len(broad) > 1:
        tiers.append((f"{_FIELDS} : ({' OR '.join(broad)})", 0.1))
    for match, score in tiers:
        if fill([(record, score) for record in _newest(db, match, tags, limit - len(hits), found())]):
            break
    return hits


BROAD_MATCHES = 200
"""A term matching more patterns than this is "broad"; bm25 never ranks more rows than this in one query."""
_FIELDS = "{name description tags_text}"
# Tags are stored as a JSON array of `[a-z0-9._+-]` strings, so `"tag"` (quotes included) occurs in it exactly
# when the tag is one of them: a substring test, no JSON parsing per row.
_TAG_FILTER = " AND instr(p.tags, ?) > 0"


def _matches(db: sqlite_utils.Database, match: str) -> int:
    """How many patterns match, counted up to ``BROAD_MATCHES + 1`` (cheap: row ids only, no ranking)."""
    return db.execute("SELECT count(*) FROM (SELECT 1 FROM patterns_fts WHERE patterns_fts MATCH ? LIMIT ?)",
                      [match, BROAD_MATCHES + 1]).fetchone()[0]


def _filters(tags: Sequence[str], exclude: Sequence[str]) -> tuple[str, list[Any]]:
    # The tag filter reads `p.tags`, stored ahead of the long columns: matching rows' templates are not read.
    return ("".join(_TAG_FILTER for _ in tags) + (f" AND p.name NOT IN ({', '.join('?' * len(exclude))})"
                                                  if exclude else ""),
            [*(f'"{tag}"' for tag in tags), *exclude])


def _ranked(db: sqlite_utils.Database, match: str, tags: Sequence[str], limit: int, exclude: Sequence[str]
            ) -> list[tuple[PatternRecord, float]]:
    """The best ``limit`` rows by weighted bm25 (rank row ids, then fetch those rows)."""
    filters, params = _filters(tags, exclude)
    join = " JOIN patterns p ON p.rowid = patterns_fts.rowid" if filters else ""
    sql = (f"SELECT {_SELECT}, hits.rank FROM (SELECT patterns_fts.rowid AS id, {_BM25} AS rank FROM patterns_fts"
           f"{join} WHERE patterns_fts MATCH ?{filters} ORDER BY rank LIMIT ?) AS hits "
           f"JOIN patterns p ON p.rowid = hits.id ORDER BY hits.rank, p.name")
    # bm25 is lower-is-better (negative for hits); report its negation so a higher score is a better match,
    # to 4 significant digits (in a small library a common word's weight is tiny, but its order still counts).
    return [(_record(row[:-1]), float(f"{-row[-1]:.4g}") + 0.0)
            for row in db.execute(sql, [match, *params, limit])]


def _newest(db: sqlite_utils.Database, match: str, tags: Sequence[str], limit: int, exclude: Sequence[str]
            ) -> list[PatternRecord]:
    """The most recently created ``limit`` matching rows: FTS5 walks row ids newest first and stops early."""
    filters, params = _filters(tags, exclude)
    sql = (f"SELECT {_SELECT} FROM patterns_fts JOIN patterns p ON p.rowid = patterns_fts.rowid "
           f"WHERE patterns_fts MATCH ?{filters} ORDER BY patterns_fts.rowid DESC LIMIT ?")
    return [_record(row) for row in db.execute(sql, [match, *params, limit])]


def names(db: sqlite_utils.Database, prefix: str, limit: int) -> list[str]:
    """Current names starting with ``prefix`` (a range scan on the primary key, no LIKE wildcards)."""
    return [n for (n,) in db.execute("SELECT name FROM patterns WHERE name >= ? AND name < ? ORDER BY name LIMIT ?",
                                     [prefix, prefix + "\U0010ffff", limit])]


class SQLitePatterns:
    """:class:`~server.store.PatternStore` over the functions above, run on the owning thread."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def put_pattern(self, record: PatternRecord, *, keep_registered: bool = False
                          ) -> tuple[PatternRecord, bool]:
        """Store the pattern's next version in one transaction (a call, not a batched write: the owning thread
        serialises every read-modify-write)."""
        return await self._db.call(lambda db: put(db, record, keep_registered), f"pattern {record.name!r}",
                                   write=True)

    async def get_pattern(self, name: str, version: int | None = None) -> PatternRecord | None:
        """The current (or given) version of a pattern, or ``None``."""
        return await self._db.call(lambda db: get(db, name, version), f"pattern {name!r}")

    async def pattern_versions(self, name: str) -> list[int]:
        """Every version number of ``name``, ascending."""
        return await self._db.call(lambda db: versions(db, name), f"the versions of pattern {name!r}")

    async def list_patterns(self) -> list[PatternRecord]:
        """Every pattern's current version, by name."""
        return await self._db.call(current_all, "the patterns")

    async def search_patterns(self, terms: Sequence[str], tags: Sequence[str], limit: int
                              ) -> list[tuple[PatternRecord, float]]:
        """FTS5 search ranked by weighted bm25 (see :func:`search`)."""
        return await self._db.call(lambda db: search(db, list(terms), list(tags), limit), "the pattern search")

    async def pattern_names(self, prefix: str, limit: int) -> list[str]:
        """Names starting with ``prefix``."""
        return await self._db.call(lambda db: names(db, prefix, limit), "pattern names")
