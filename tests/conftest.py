"""Shared fixtures: an isolated environment, the local upstream, configs and servers built on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.config import Config
from server.simulator import Upstream

_ISOLATED_PREFIXES = ("OPENAI_", "ANTHROPIC_", "AI_ORCHESTRATION_", "OTEL_")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provider keys, config or database from the developer's machine; data and cache directories under
    tmp_path."""
    for name in list(os.environ):
        if name.startswith(_ISOLATED_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture
def config_file(tmp_path: Path, upstream: Upstream) -> Path:
    """A config file with two providers on the local upstream: `primary` (openai, gpt-sim) then `backup`
    (anthropic, claude-sim)."""
    return write_config(
        tmp_path / "config.toml",
        provider_entry(upstream, "primary", kind="openai", model="gpt-sim", priority=1),
        provider_entry(upstream, "backup", kind="anthropic", model="claude-sim", priority=2),
    )


def provider_entry(upstream: Upstream, name: str, kind: str = "openai", model: str | None = None, **extra) -> dict:
    """A ``[[providers]]`` entry pointing at the local upstream."""
    base_url = upstream.openai_base_url if kind == "openai" else upstream.url
    return {"name": name, "kind": kind, "model": model or f"{name}-model", "base_url": base_url, **extra}


def config_for(*entries: dict, **sections) -> Config:
    """A validated :class:`Config` from provider entries (keys resolve to none: the upstream needs none)."""
    return Config.model_validate({"providers": list(entries), **sections})


def write_config(path: Path, *entries: dict) -> Path:
    """Write entries as a TOML config file (flat values only)."""
    lines = []
    for entry in entries:
        lines.append("[[providers]]")
        for key, value in entry.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="session")
def dbos_launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One DBOS instance for the whole test session (launching and destroying one costs about a second);
    tests isolate themselves by run ids."""
    from dbos import DBOS

    from server.workflows.dbos_runtime import dbos_config

    DBOS(config=dbos_config(tmp_path_factory.mktemp("dbos") / "system.sqlite"))
    DBOS.launch()
    yield
    DBOS.destroy()


@pytest.fixture(scope="session")
def downstream_url() -> Iterator[str]:
    """The small downstream MCP server of ``tests/downstream_mcp.py`` over Streamable HTTP on loopback."""
    import subprocess
    import sys

    from tests.serving import free_port, server_env, wait_for_port

    port = free_port()
    process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "downstream_mcp.py"), "--http", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=server_env(), text=True)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)
        process.stderr.close()


@pytest.fixture(scope="session", autouse=True)
def canary_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: the planted canary secret and every API key the tests made appear in no file the
    run wrote (server logs, SQLite databases and their WAL files, dumped tool results) and in no log record
    emitted in-process (any logger, any level)."""
    import logging

    from tests.secure_serving import CANARY, CREATED_KEYS

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                records.append(record.getMessage())
            except Exception:  # noqa: BLE001 - a record that cannot format has nothing to leak
                pass

    keep = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(keep)
    yield
    root.removeHandler(keep)
    secrets = [CANARY.encode(), *(key.encode() for key in CREATED_KEYS),
               *(key.split("_", 2)[-1].encode() for key in CREATED_KEYS)]
    hits = []
    scanned = 0
    for path in tmp_path_factory.getbasetemp().rglob("*"):
        if path.is_file() and not path.is_symlink():
            scanned += 1
            data = path.read_bytes()
            hits += [f"{path}: {s[:12].decode()}…" for s in secrets if s in data]
    hits += [f"log record: {s[:12].decode()}…" for line in records for s in secrets if s.decode() in line]
    assert not hits, f"secrets found after the run ({scanned} files scanned): {hits[:20]}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A throwaway PostgreSQL cluster on loopback for the session (:class:`tests.services.PostgresCluster`);
    skipped when PostgreSQL is not installed, failed instead when ``CI`` is set."""
    from tests.services import PostgresCluster, postgres_bindir, unavailable

    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin)")
    cluster = PostgresCluster(bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres) -> str:
    """A fresh, empty database in the session's cluster: its ``postgresql://`` URL."""
    return postgres.database()


@pytest.fixture
def nginx() -> Iterator[Callable[..., object]]:
    """Start nginx (:class:`tests.services.Nginx`) with the given ``http {}`` block; stopped after the test.
    Skipped when nginx is not installed, failed instead when ``CI`` is set."""
    from tests.services import NGINX, Nginx, unavailable

    if not os.access(NGINX, os.X_OK):
        unavailable(f"nginx is not installed ({NGINX})")
    started: list[Nginx] = []

    def start(http_block: str, port: int | None = None) -> Nginx:
        started.append(Nginx(http_block, port).start())
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()
