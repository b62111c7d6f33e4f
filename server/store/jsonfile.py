"""Simple mode's store: patterns and saved workflows in one JSON file; everything else in memory.

Call records, conversations, the response cache and run records live in memory as in
:class:`~server.store.memory.MemoryStore` (simple mode keeps no history across restarts). Patterns (every version of
each) and saved workflows are written to the file on each change by an atomic replace (a temporary file in the
same folder, flushed and fsynced, then ``os.replace``), so a crash leaves the old file or the new one, never half
of one, and a change is on disk before its version is returned. The file belongs to one serving process
(:mod:`server.store.serving_lock`).

The file (UTF-8 JSON)::

    {
      "format": "ai-orchestration-mcp/simple-state",
      "version": 1,
      "patterns": {"code-review": [{"name": "code-review", "version": 1, "description": "...",
                                    "template": "...", "variables": [...], "metadata": {...},
                                    "apply_to": [...], "tags": [...], "source": "builtin",
                                    "created_at": 1763700000.0, "updated_at": 1763700000.0}, ...]},
      "workflows": {"review": {"name": "review", "version": 2, "definition": {...},
                               "created_at": 1763700000.0, "updated_at": 1763700100.0}}
    }

``patterns`` maps a name to its versions, oldest first (the fields of :class:`server.store.PatternRecord`;
Unix seconds). ``workflows`` maps a saved workflow's name to its current version (the fields of
:class:`server.store.WorkflowRecord`; ``save_workflow`` / ``run_workflow`` by name). Keys this version does not
know are kept as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import anyio

from server.errors import ConfigError
from server.store.errors import StorageError, condition_of
from server.store.memory import MemoryStore, MemoryWorkflows
from server.store.memory_patterns import MemoryPatterns
from server.store.records import PatternRecord, WorkflowRecord

logger = logging.getLogger(__name__)
FORMAT = "ai-orchestration-mcp/simple-state"
VERSION = 1
_FIELDS = tuple(f.name for f in dataclasses.fields(PatternRecord))


class StateFileError(ConfigError):
    """The state file cannot be read (invalid JSON, another format, a newer version).

    A ``ConfigError``: the server refuses to start on an unreadable file rather than overwrite what it holds.
    """


class StateFile:
    """The document on disk, written whole on every change (under a lock, so changes never interleave).

    Args:
        path: the JSON file; a missing one is an empty document (the file is created on the first change).

    Raises:
        StateFileError: the file exists but is not a state file this version can read (names the file and why).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.document = _read(self.path)
        self.lock = anyio.Lock()
        self.patterns = MemoryPatterns()
        self.workflows = MemoryWorkflows()
        self.workflows.workflows = {name: _workflow_record(self.path, name, entry)
                                    for name, entry in (self.document.get("workflows") or {}).items()}
        for name, versions in (self.document.get("patterns") or {}).items():
            self.patterns.patterns[name] = [_record(self.path, name, entry) for entry in versions]

    async def save(self, what: str) -> None:
        """Write the whole document atomically (serialised here, written on a worker thread).

        Raises:
            StorageError: the file could not be written (it is left as it was).
        """
        document = {
            **self.document,
            "format": FORMAT,
            "version": VERSION,
            "patterns": {name: [_entry(r) for r in versions]
                         for name, versions in sorted(self.patterns.patterns.items())},
            "workflows": {name: dataclasses.asdict(record)
                          for name, record in sorted(self.workflows.workflows.items())},
        }
        try:
            data = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
            await anyio.to_thread.run_sync(write_atomically, self.path, data)
        except (OSError, UnicodeError) as exc:
            logger.error("state file %s: %s was not stored (%s)", self.path, what, condition_of(exc))
            raise StorageError.of(exc, what) from exc


class JSONFilePatterns(MemoryPatterns):
    """Patterns kept in memory and written to the :class:`StateFile` on every change."""

    def __init__(self, state: StateFile) -> None:
        super().__init__()
        self.patterns = state.patterns.patterns
        self._state = state

    async def put_pattern(self, record: PatternRecord, *, keep_registered: bool = False
                          ) -> tuple[PatternRecord, bool]:
        """Store the next version and write the file; on a failed write nothing is stored.

        Raises:
            StorageError: the file could not be written (the in-memory library is left as it was).
        """
        async with self._state.lock:
            stored, changed = await super().put_pattern(record, keep_registered=keep_registered)
            if changed:
                try:
                    await self._state.save(f"pattern {record.name!r}")
                except StorageError:
                    history = self.patterns[record.name]
                    history.pop()
                    if not history:
                        del self.patterns[record.name]
                    raise
            return stored, changed


class JSONFileWorkflows(MemoryWorkflows):
    """Saved workflows kept in memory and written to the :class:`StateFile` on every change."""

    def __init__(self, state: StateFile) -> None:
        super().__init__()
        self.workflows = state.workflows.workflows
        self._state = state

    async def put_workflow(self, name: str, definition: dict[str, Any], ts: float) -> tuple[WorkflowRecord, bool]:
        """Save a workflow definition and write the file; on a failed write nothing is stored.

        Raises:
            StorageError: the file could not be written (the saved workflows are left as they were).
        """
        async with self._state.lock:
            previous = self.workflows.get(name)
            stored, changed = await super().put_workflow(name, definition, ts)
            if changed:
                try:
                    await self._state.save(f"workflow {name!r}")
                except StorageError:
                    if previous is None:
                        del self.workflows[name]
                    else:
                        self.workflows[name] = previous
                    raise
            return stored, changed


class JSONFileStore(MemoryStore):
    """The simple-mode store: :class:`MemoryStore` with patterns and saved workflows in a :class:`StateFile`.

    Args:
        path: the JSON file.

    Raises:
        StateFileError: the file exists but is not a state file this version can read (names the file and why).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.state = StateFile(path)
        self.path = self.state.path
        self.patterns = JSONFilePatterns(self.state)
        self.workflows = JSONFileWorkflows(self.state)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: a temporary sibling, fsynced, then ``os.replace``.

    Raises:
        OSError: the folder or file cannot be written (``path`` is then unchanged).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        with contextlib.suppress(OSError):
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


def _workflow_record(path: Path, name: str, entry: Any) -> WorkflowRecord:
    fields = ("name", "version", "definition", "created_at", "updated_at")
    if not isinstance(entry, dict) or any(field not in entry for field in fields) \
            or not isinstance(entry["definition"], dict) or entry["name"] != name:
        raise StateFileError(f"the state file {path}: saved workflow {name!r} is not a record with "
                             f"{', '.join(fields)}")
    return WorkflowRecord(**{field: entry[field] for field in fields})


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFileError(f"cannot read the state file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise StateFileError(f"the state file {path} is not valid JSON ({exc}); fix it or move it away — "
                             "the server will not overwrite it") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StateFileError(f"{path} is not an ai-orchestration-mcp state file (no \"format\": \"{FORMAT}\")")
    if not isinstance(document.get("version"), int) or document["version"] > VERSION:
        raise StateFileError(f"the state file {path} has version {document.get('version')!r}; this server reads "
                             f"version {VERSION} or older: upgrade ai-orchestration-mcp")
    if not isinstance(document.get("patterns", {}), dict) or not isinstance(document.get("workflows", {}), dict):
        raise StateFileError(f"the state file {path}: \"patterns\" and \"workflows\" must be JSON objects")
    return document


def _entry(record: PatternRecord) -> dict[str, Any]:
    entry = dataclasses.asdict(record)
    for key in ("variables", "apply_to", "tags"):
        entry[key] = list(entry[key])
    return entry


def _record(path: Path, name: str, entry: Any) -> PatternRecord:
    try:
        if not isinstance(entry, dict) or entry.get("name") != name or set(entry) - set(_FIELDS):
            raise TypeError("not a pattern version of this name")
        record = PatternRecord(**{**entry, **{key: tuple(entry.get(key) or ()) for key in
                                              ("variables", "apply_to", "tags")}})
        if not isinstance(record.version, int) or not isinstance(record.template, str):
            raise TypeError("version must be a number and template text")
        return record
    except TypeError as exc:
        raise StateFileError(f"the state file {path}: pattern {name!r} has an unreadable version ({exc})") from None
