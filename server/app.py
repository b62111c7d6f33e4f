"""App assembly: the dependencies object, the MCPServer with its lifespan, and the MCP surface.

This is the only module that imports the surface packages (``tools``, ``resources``, ``prompts``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from mcp.server import MCPServer

from server.config import Config
from server.pool import ProviderPool
from server.providers import Provider, build_provider
from server.store import Store

logger = logging.getLogger(__name__)

SERVER_NAME = "ai-orchestration-mcp"
INSTRUCTIONS = (
    "Orchestrates LLM providers. `orchestrate` sends one prompt through the provider pool with fallback; "
    "`monitor_operations` reports latency, errors, tokens and cost of recorded calls."
)


@dataclass(frozen=True)
class Dependencies:
    """Everything the tools need, built once per server (per connection for in-memory clients)."""

    config: Config
    store: Store
    pool: ProviderPool
    clock: Callable[[], float] = time.time


def open_store(path: str | Path) -> Store:
    """The full-mode store at ``path`` (imports sqlite-utils only now)."""
    from server.store.sqlite import SQLiteStore

    return SQLiteStore(path)


@asynccontextmanager
async def open_dependencies(
    config: Config,
    *,
    store_factory: Callable[[], Store],
    provider_factory: Callable[..., Provider] = build_provider,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Dependencies]:
    """Build the dependencies, and on exit close providers and flush the store (shielded from cancellation).

    Args:
        store_factory: called here; the store it returns is closed (flushed) on exit.
        provider_factory: ``ProviderConfig -> Provider`` (tests pass fakes).
    """
    store = store_factory()
    try:
        pool = ProviderPool([(p, provider_factory(p)) for p in config.providers], store, config=config, clock=clock)
        await pool.load_spend()
    except BaseException:
        await store.aclose()
        raise
    try:
        yield Dependencies(config=config, store=store, pool=pool, clock=clock)
    finally:
        import anyio

        with anyio.CancelScope(shield=True):
            await pool.aclose()
            await store.aclose()


def build_server(
    config: Config,
    *,
    store_factory: Callable[[], Store],
    provider_factory: Callable[..., Provider] = build_provider,
    shared: Dependencies | None = None,
    clock: Callable[[], float] = time.time,
) -> MCPServer:
    """The MCP server with every tool, resource and prompt registered.

    Args:
        config: the loaded configuration.
        store_factory: makes the store; the lifespan opens (and closes) one per lifespan.
        shared: dependencies built by the caller and kept open across lifespans (SSE runs one lifespan per
            connection; the CLI shares one set for the process).
    """
    import prompts
    import resources
    import tools

    # The latest lifespan's dependencies, for handlers that get no request context (static resources).
    current: list[Dependencies] = [shared] if shared is not None else []

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Dependencies]:
        if shared is not None:
            yield shared
            return
        async with open_dependencies(
            config, store_factory=store_factory, provider_factory=provider_factory, clock=clock
        ) as deps:
            current.append(deps)
            try:
                yield deps
            finally:
                current.remove(deps)

    mcp = MCPServer(
        SERVER_NAME, instructions=INSTRUCTIONS, lifespan=lifespan, version=server_version(), tools=tools.all_tools()
    )
    resources.register(mcp, lambda: current[-1])
    prompts.register(mcp)
    return mcp


def server_version() -> str:
    """The installed distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-orchestration-mcp")
    except PackageNotFoundError:
        return "0+unknown"
