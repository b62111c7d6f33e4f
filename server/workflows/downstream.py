"""Calls to tools of downstream MCP servers (workflow ``tool`` steps): the server acts as an MCP client.

Servers come from the configuration's ``[mcp_servers.NAME]`` tables (like Claude Desktop's ``mcpServers``):
``command``/``args``/``env`` starts a stdio server, ``url`` reaches a Streamable HTTP one.

**One pooled session per server.** A server's session opens at its first call and stays open for the next
ones (concurrent calls share it: JSON-RPC multiplexes them), until :meth:`DownstreamServers.serve` is cancelled
at shutdown, which closes every session (a stdio server's process is stopped, its process tree killed if it
lingers). Opening (starting the process, the handshake) is bounded by the server's own ``timeout_s``; a step's
``timeout_s`` bounds the tool call alone. A session that fails (the process died, the connection dropped) is
discarded and the next call opens a new one; a stdio server's exit is noticed as it happens (its stderr pipe
closes), so a call after a crash goes to a new process. No call is repeated by the pool: a call the server
died under fails with ``connection`` (a step's ``retry`` may try it again).

**Secrets.** A stdio server's stderr never reaches the server's stderr directly: it is read line by line and
logged (INFO, this module's logger) with configured secrets redacted (``[mcp_servers] env`` values and
headers, provider keys, a URL's credentials). Errors and tool outputs are redacted likewise. Only the configured ``headers`` are
sent to a URL server: nothing of the MCP client's own request (its ``Authorization`` header above all) is ever
forwarded. A URL server's address is checked against the address policy before each (re)connection, and every
HTTP request to it passes :mod:`server.security.outbound` (no redirects followed, the connected address
checked). The MCP client is imported on first use.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

import anyio

from server.config import McpServerConfig
from server.security.addresses import AddressPolicy, AddressRefused
from server.security.redact import redact

logger = logging.getLogger(__name__)
_MAX_TEXT = 1_000_000
_MAX_STDERR_LINE = 2_000
_CONNECTION_CLOSED = -32000  # JSON-RPC code the MCP SDK gives calls on a closed connection (mcp_types.jsonrpc)


def _failed(message: str, error_class: str) -> Exception:
    from server.workflows.steps import StepFailed  # not at import: start-up stays free of the workflow engine

    return StepFailed(message, error_class=error_class)


@dataclass
class _Session:
    client: Any
    stop: anyio.Event = field(default_factory=anyio.Event)
    dead: bool = False


class _StderrLog:
    """A pipe for a stdio server's stderr; a daemon thread logs each line it reads, redacted. Once the server is
    started, :meth:`watch` closes our copy of the write end: end of file then means the process is gone, and
    marks its session dead."""

    def __init__(self, server: str, secrets: Iterable[str]) -> None:
        read_fd, write_fd = os.pipe()
        self.file: TextIO = os.fdopen(write_fd, "w")
        self._session: _Session | None = None
        reader = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        secrets = tuple(secrets)

        def pump() -> None:
            with reader:
                for line in reader:  # ends when the server's copy and ours are closed
                    logger.info("MCP server %r: %s", server, redact(line.rstrip()[:_MAX_STDERR_LINE], secrets))
            if self._session is not None:
                self._session.dead = True  # a plain flag: the event loop reads it before the next call

        threading.Thread(target=pump, name=f"mcp-server-stderr-{server}", daemon=True).start()

    def watch(self, session: _Session) -> None:
        """The server runs (it answered the handshake): from now on end of file means it exited."""
        self._session = session
        self.close()

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()


class DownstreamServers:
    """The configured downstream MCP servers and their pooled sessions (see the module docstring).

    Args:
        servers: name -> configuration.
        secrets: values redacted from stderr and any error text (env values, headers, provider keys).
        policy: the outbound address policy (``[network]``); its resolver too (tests pass a fake one).

    Run :meth:`serve` in a task group for as long as calls may come (the lifespan does); it owns the sessions.
    """

    def __init__(self, servers: Mapping[str, McpServerConfig], secrets: Iterable[str] = (), *,
                 policy: AddressPolicy | None = None) -> None:
        self._servers = dict(servers)
        self._secrets = [*secrets, *(v for s in self._servers.values() for v in _url_secrets(s.url))]
        self._policy = policy or AddressPolicy()
        self._sessions: dict[str, _Session] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._group: Any = None

    @property
    def names(self) -> list[str]:
        """The configured servers' names, sorted."""
        return sorted(self._servers)

    async def serve(self) -> None:
        """Hold the sessions until cancelled; then close them all."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                await anyio.sleep_forever()
            finally:
                self._group = None
                for session in self._sessions.values():
                    session.stop.set()
                self._sessions.clear()

    async def call(self, server: str, tool: str, arguments: Mapping[str, Any], timeout_s: float | None
                   ) -> dict[str, Any]:
        """Call ``tool`` on ``server``; ``timeout_s`` (capped by the server's own ``timeout_s``) bounds the call.

        Returns:
            ``{"text": <text content joined>, "content": [<content blocks>], "structured": <structured content>}``.

        Raises:
            StepFailed: ``unknown_server``, ``address_refused``, ``connection`` (could not reach or start the
                server, or it went away), ``timeout``, or ``tool_error`` (the tool answered with an error, or the
                server refused the call).
        """
        config = self._config(server)
        limit = min(timeout_s or config.timeout_s, config.timeout_s)
        session = await self._session(server, config)
        result = await self._call(session, server, tool, arguments, limit)
        blocks = _redacted([block.model_dump(mode="json", exclude_none=True) for block in result.content],
                           self._secrets)
        text = "\n".join(b.get("text", "") for b in blocks if b.get("type") == "text")[:_MAX_TEXT]
        if result.is_error:
            raise _failed(f"tool {tool!r} on {server!r} failed: {text[:500]}", "tool_error")
        return {"text": text, "content": blocks, "structured": _redacted(result.structured_content, self._secrets)}

    async def tools(self, server: str) -> list[dict[str, Any]]:
        """The tools ``server`` offers: ``[{"name", "description", "input_schema"}]`` (its session opens if needed).

        Raises:
            StepFailed: as :meth:`call` (``connection``, ``address_refused``, ``unknown_server``).
        """
        from mcp import MCPError

        config = self._config(server)
        session = await self._session(server, config)
        try:
            with anyio.fail_after(config.timeout_s):
                listed = await session.client.list_tools()
        except TimeoutError:
            raise _failed(f"MCP server {server!r} did not list its tools within {config.timeout_s:g} s",
                          "timeout") from None
        except (MCPError, OSError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            self._discard(server, session)
            raise _failed(f"MCP server {server!r}: {self._clean(exc)}", "connection") from None
        return [{"name": t.name, "description": t.description or "", "input_schema": t.input_schema}
                for t in listed.tools]

    def describe(self, server: str) -> str:
        """How ``server`` is reached, without secrets: its command, or its URL's scheme, host and path."""
        config = self._config(server)
        if config.command is not None:
            return f"stdio: {' '.join([config.command, *config.args])[:200]}"
        parts = urlsplit(config.url or "")
        return f"http: {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    # -- sessions -----------------------------------------------------------------------------------------------

    def _config(self, server: str) -> McpServerConfig:
        config = self._servers.get(server)
        if config is None:
            known = ", ".join(sorted(self._servers)) or "none configured"
            raise _failed(f"unknown MCP server {server!r}; configured: {known}", "unknown_server")
        return config

    async def _session(self, server: str, config: McpServerConfig) -> _Session:
        """The server's open session, or a new one."""
        lock = self._locks.setdefault(server, anyio.Lock())
        async with lock:
            session = self._sessions.get(server)
            if session is not None and not session.dead:
                return session
            if session is not None:
                self._discard(server, session)  # its process exited: let its holder close the client
            if config.url is not None:  # before each (re)connection: a name may resolve elsewhere now
                try:
                    await anyio.to_thread.run_sync(self._policy.check_url_resolved, config.url)
                except AddressRefused as exc:
                    raise _failed(f"MCP server {server!r}: {exc}", "address_refused") from None
            if self._group is None:
                raise _failed(f"MCP server {server!r}: the session pool is not running (server shutting down?)",
                              "connection")
            try:
                with anyio.fail_after(config.timeout_s):
                    session = await self._group.start(self._hold, server, config)
            except TimeoutError:
                raise _failed(f"MCP server {server!r} did not start within {config.timeout_s:g} s",
                              "connection") from None
            except Exception as exc:  # noqa: BLE001 - any failure to open is this server's connection error
                raise _failed(f"could not reach MCP server {server!r}: {self._clean(exc)}", "connection") from None
            self._sessions[server] = session
            return session

    async def _hold(self, server: str, config: McpServerConfig, *, task_status: Any) -> None:
        """Open the session, report it, keep it open until told to stop or until it fails."""
        from mcp import Client, StdioServerParameters

        stderr: _StderrLog | None = None
        http: Any = None
        session: _Session | None = None
        try:
            if config.command is not None:
                from mcp.client.stdio import stdio_client

                stderr = _StderrLog(server, self._secrets)
                target: Any = stdio_client(StdioServerParameters(
                    command=config.command, args=list(config.args), env=dict(config.env) or None, cwd=config.cwd),
                    errlog=stderr.file)
            else:
                from mcp.client.streamable_http import streamable_http_client

                from server.security.outbound import outbound_client

                http = outbound_client(self._policy, headers=config.headers, timeout=config.timeout_s)
                target = streamable_http_client(config.url or "", http_client=http)  # closed by us, below
            async with Client(target, read_timeout_seconds=config.timeout_s, cache=None) as client:
                session = _Session(client)
                if stderr is not None:
                    stderr.watch(session)
                task_status.started(session)
                await session.stop.wait()
        except Exception as exc:  # noqa: BLE001 - after start-up, a failing session must not end the pool
            if session is None:
                raise  # to the opener (TaskGroup.start)
            logger.warning("MCP server %r: session ended: %s", server, self._clean(exc))
        finally:
            if session is not None:
                session.dead = True
                if self._sessions.get(server) is session:
                    del self._sessions[server]
            if stderr is not None:
                stderr.close()
            if http is not None:
                with anyio.CancelScope(shield=True):
                    await http.aclose()

    def _discard(self, server: str, session: _Session) -> None:
        session.dead = True
        session.stop.set()
        if self._sessions.get(server) is session:
            del self._sessions[server]

    async def _call(self, session: _Session, server: str, tool: str, arguments: Mapping[str, Any],
                    limit: float) -> Any:
        from mcp import MCPError

        try:
            with anyio.fail_after(limit):
                return await session.client.call_tool(tool, dict(arguments))
        except TimeoutError:
            raise _failed(f"MCP server {server!r} did not answer {tool!r} within {limit:g} s", "timeout") from None
        except MCPError as exc:
            if exc.code != _CONNECTION_CLOSED:
                raise _failed(f"MCP server {server!r} refused {tool!r}: {self._clean(exc)}", "tool_error") from None
            self._discard(server, session)
            raise _failed(f"MCP server {server!r} closed the connection during {tool!r} (the next call opens a "
                          "new session)", "connection") from None
        except Exception as exc:  # noqa: BLE001 - transport failures arrive as groups and library errors
            self._discard(server, session)
            raise _failed(f"could not reach MCP server {server!r}: {self._clean(exc)}", "connection") from None

    def _clean(self, exc: BaseException) -> str:
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        return redact(str(exc) or type(exc).__name__, self._secrets)[:500]


def _redacted(value: Any, secrets: list[str]) -> Any:
    """``value`` (JSON) with secrets redacted from every string: a tool's output is a result too."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_redacted(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v, secrets) for k, v in value.items()}
    return value


def _url_secrets(url: str | None) -> list[str]:
    """Credentials a URL may carry: its password and its query values."""
    if not url:
        return []
    parts = urlsplit(url)
    return [v for v in (parts.password, *(value for _, value in parse_qsl(parts.query))) if v]
