"""Simple mode: the server where only ``mcp`` (and what it depends on) is installed.

``ai-orchestration-mcp --simple`` (or ``AI_ORCHESTRATION_SIMPLE=1``) assembles the same core as full mode
(:func:`server.app.assembly.build_server`: the pool, consensus, the pattern registry, the tools, resources and prompts)
with:

- providers that speak the OpenAI Chat Completions and Anthropic Messages wire formats over ``httpx2``
  (:func:`server.pool.providers.build_wire_provider`) instead of the vendor SDKs;
- :class:`server.store.jsonfile.JSONFileStore`: patterns (and saved workflows) in one JSON file in the data
  directory, written by atomic replace; call records, conversations and the cache in memory;
- the tools of :data:`tools.SIMPLE_MODE_TOOLS`; any other tool answers :class:`FullModeRequired`'s message;
- no tracing, and the in-memory workflow runtime (``Dependencies.simple`` tells the code that picks them).

Every module this path imports uses only the standard library and ``mcp``'s own dependency set (``pydantic``,
``httpx2``, ``anyio`` …): ``tests/integration/test_simple_mode.py`` checks that on a running server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from mcp.server import MCPServer

from server.app.assembly import build_server
from server.dependencies import Dependencies
from server.config import Config, database_path
from server.errors import ConfigError, OrchestrationError
from server.pool.providers import Provider, build_wire_provider
from server.store import Store
from server.store.jsonfile import JSONFileStore

ENV_FLAG = "AI_ORCHESTRATION_SIMPLE"
FULL_MODE_HINT = "start the server without --simple, with the full install (pip install ai-orchestration-mcp)"


class FullModeRequired(OrchestrationError):
    """A feature was asked of simple mode that only full mode has.

    Attributes:
        feature: what was asked for (a tool name, an argument, a subcommand).
    """

    def __init__(self, feature: str, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(f"{feature} needs full mode{detail}: {FULL_MODE_HINT}")
        self.feature = feature


def simple_mode_requested(flag: bool, environ: Mapping[str, str]) -> bool:
    """``--simple``, else ``AI_ORCHESTRATION_SIMPLE`` (``1``/``true``/``yes`` or ``0``/``false``/``no``/empty).

    Raises:
        ConfigError: the variable has another value (named in the message).
    """
    if flag:
        return True
    value = environ.get(ENV_FLAG, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"must be 1 or 0 (true/false), not {value!r}", key=ENV_FLAG)


def state_path(config: Config, environ: Mapping[str, str], override: str | None = None) -> Path:
    """Simple mode's JSON file: the database path (``--database``, ``AI_ORCHESTRATION_DB``, ``[server].database``,
    else ``<user data dir>/state.db``) with the suffix ``.json`` — by default ``<user data dir>/state.json``.

    Raises:
        ConfigError: the database is a PostgreSQL URL (simple mode keeps its state in a file).
    """
    location = database_path(config, environ, override)
    if not isinstance(location, Path):
        raise ConfigError(f"simple mode keeps its state in a JSON file, not in PostgreSQL ({location}): "
                          "run full mode for a shared database", key="--simple")
    return location.with_suffix(".json")


def open_simple_store(path: str | Path) -> Store:
    """The simple-mode store at ``path``.

    Raises:
        server.store.jsonfile.StateFileError: the file exists but cannot be read (a ``ConfigError``).
    """
    return JSONFileStore(path)


def build_simple_server(
    config: Config,
    *,
    store_factory: Callable[[], Store],
    provider_factory: Callable[..., Provider] = build_wire_provider,
    shared: Dependencies | None = None,
    clock: Callable[[], float] = time.time,
    enabled_tools: Collection[str] | None = None,
    full_mode_only: Collection[str] | None = None,
) -> MCPServer:
    """:func:`server.app.assembly.build_server` for simple mode (arguments as there; providers default to the wire
    ones). A call to a tool of ``full_mode_only`` (default: those outside :data:`tools.SIMPLE_MODE_TOOLS`)
    answers :class:`FullModeRequired`'s message."""
    import tools

    if full_mode_only is None:
        full_mode_only = [name for name in tools.TOOL_NAMES if name not in tools.SIMPLE_MODE_TOOLS]
    wanted = tools.TOOL_NAMES if enabled_tools is None else enabled_tools
    refused = {name: str(FullModeRequired(f"the tool {name}", "not offered in simple mode"))
               for name in full_mode_only}
    return build_server(config, store_factory=store_factory, provider_factory=provider_factory, shared=shared,
                        clock=clock, enabled_tools=[name for name in wanted if name not in refused],
                        refused_tools=refused, simple=True)
