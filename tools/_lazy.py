"""Tools whose SDK metadata is built at their first call, with their listing cached on disk.

Building a tool with the SDK's ``Tool.from_function`` (a pydantic argument model, an output model, two JSON
schemas) costs about 12 ms per tool: for the ten tools, most of what this server adds to start-up over a bare
``MCPServer`` (``bench/startup.py``). ``tools/list`` needs only what a tool is listed with (name, description,
annotations, the two schemas), so that is cached in a file under the user's cache directory, keyed by a
digest of this project's source files and the Python, ``mcp`` and ``pydantic`` versions (anything that could
change a schema); a cached tool builds its argument model at its first call, and the module that defines it is imported only then (with the core modules it needs). A
missing, stale or unreadable cache costs one ordinary build, after which the file is rewritten.

The digest is computed at every start, so it reads no file contents and no package metadata: source files
count by path, size and modification time (an edit changes the time; restoring an older file with its old
time and size would go unnoticed, and costs at worst stale schemas until the next edit), and the versions
come from the names of the ``*.dist-info`` folders next to the installed packages (``mcp-2.3.0.dist-info``),
which is what ``importlib.metadata`` reads them from too, without parsing each ``METADATA`` file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import PrivateAttr

logger = logging.getLogger(__name__)
_PACKAGES = ("server", "tools", "knowledge")  # where tool signatures and their result models are defined
_VERSIONED = ("mcp", "mcp_types", "pydantic", "pydantic_core")  # what builds the schemas from those signatures
_ENTRY_KEYS = frozenset({"title", "description", "annotations", "meta", "parameters", "output_schema", "context_kwarg",
                         "is_async"})
_cache: dict[str, dict[str, Any]] | None = None
_cache_path: Path | None = None


class LazyTool(Tool):
    """A tool listed from cached schemas; the real one (same function, same schemas) is built at first call."""

    _build: Callable[[], Tool] = PrivateAttr()
    _real: Tool | None = PrivateAttr(default=None)
    _output_schema: dict[str, Any] | None = PrivateAttr(default=None)

    @property  # type: ignore[override]  # Tool's is a cached_property over fn_metadata, which is built later
    def output_schema(self) -> dict[str, Any] | None:
        return self._output_schema

    def real(self) -> Tool:
        """The fully built tool (built now if it was not yet)."""
        if self._real is None:
            self._real = self._build()
        return self._real

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        return await self.real().run(arguments, context, convert_result=convert_result)


def cached_tool(name: str, build: Callable[[], Tool]) -> Tool:
    """``build()``'s tool, or a :class:`LazyTool` listed as it would be (same name, description, annotations and
    schemas) when the cache holds this tool for the current source; ``build`` runs at its first call then."""
    entry = _load().get(name)
    if entry is None:
        tool = build()
        if tool.name != name:
            raise ValueError(f"the tool built for {name!r} is named {tool.name!r}")
        if not tool.icons:  # none of ours has icons; a tool with some is not cached (built at every start)
            _store(name, _entry(tool))
        return tool
    annotations = entry["annotations"]
    tool = LazyTool.model_construct(
        fn=_not_built, name=name, title=entry["title"], description=entry["description"],
        parameters=entry["parameters"], fn_metadata=None, is_async=entry["is_async"],
        context_kwarg=entry["context_kwarg"], resolved_params={}, resolver_plans={},
        annotations=None if annotations is None else ToolAnnotations.model_validate(annotations),
        icons=None, meta=entry["meta"])
    tool._build = build
    tool._output_schema = entry["output_schema"]
    return tool


def _entry(tool: Tool) -> dict[str, Any]:
    annotations = tool.annotations.model_dump(mode="json", by_alias=True) if tool.annotations else None
    return {"title": tool.title, "description": tool.description, "annotations": annotations, "meta": tool.meta,
            "parameters": tool.parameters, "output_schema": tool.output_schema,
            "context_kwarg": tool.context_kwarg, "is_async": tool.is_async}


def _not_built(**_: Any) -> Any:  # pragma: no cover - LazyTool.run always runs the real tool
    raise RuntimeError("a lazily built tool was called before it was built")


def cache_file() -> Path:
    """Where the schemas for the current source live (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ai-orchestration-mcp"
    return root / f"tool-schemas-{_digest()}.json"


@functools.cache
def _digest() -> str:
    digest = hashlib.sha256()
    digest.update(sys.version.encode())
    for dist_info in _distributions(_VERSIONED):
        digest.update(f"{dist_info};".encode())
    root = Path(__file__).resolve().parent.parent
    for package in _PACKAGES:
        for relative, size, mtime_ns in _source_files(root, package):
            digest.update(f"{relative}:{size}:{mtime_ns};".encode())
    return digest.hexdigest()[:32]


def _distributions(modules: tuple[str, ...]) -> list[str]:
    """The ``*.dist-info`` folder names (which carry the version) of the distributions installing ``modules``:
    those in the folders the modules were imported from whose project name is a module's; ``name=?`` for a
    module without one (then a version change goes unnoticed, as it would for a source checkout)."""
    listings: dict[str, list[str]] = {}
    found: list[str] = []
    for name in modules:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        folder = os.path.dirname(os.path.dirname(file)) if file else ""
        if folder not in listings:
            try:
                listings[folder] = [e for e in os.listdir(folder) if e.endswith(".dist-info")] if folder else []
            except OSError:
                listings[folder] = []
        mine = sorted(e for e in listings[folder] if e.split("-", 1)[0].lower() == name)
        found.extend(mine or [f"{name}=?"])
    return found


def _source_files(root: Path, package: str) -> list[tuple[str, int, int]]:
    """(path relative to ``root``, size, mtime_ns) of every ``.py`` file under ``root / package``, sorted."""
    files: list[tuple[str, int, int]] = []
    pending = [package]
    while pending:
        relative = pending.pop()
        try:
            scan = os.scandir(root / relative)
        except OSError:
            continue
        with scan:
            for entry in scan:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        pending.append(f"{relative}/{entry.name}")
                elif entry.name.endswith(".py"):
                    stat = entry.stat()
                    files.append((f"{relative}/{entry.name}", stat.st_size, stat.st_mtime_ns))
    return sorted(files)


def _load() -> dict[str, dict[str, Any]]:
    global _cache, _cache_path
    path = cache_file()
    if _cache is None or path != _cache_path:
        _cache_path, _cache = path, {}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict) and all(isinstance(v, dict) for v in loaded.values()):
                _cache = {name: entry for name, entry in loaded.items() if _ENTRY_KEYS <= entry.keys()}
        except (OSError, ValueError):
            pass  # no cache yet, or an unreadable one: tools are built as usual and the file rewritten
    return _cache


def _store(name: str, entry: dict[str, Any]) -> None:
    cache = _load()
    cache[name] = entry
    path = _cache_path
    assert path is not None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tool-schemas.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(cache, file)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        for stale in path.parent.glob("tool-schemas-*.json"):  # files for older source
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as exc:  # a read-only home: start-up just stays at the uncached speed
        logger.debug("tool schema cache not written: %s", exc)
