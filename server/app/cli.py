"""The ``ai-orchestration-mcp`` command: serve (default), ``check``, ``simulate-upstream``, ``demo``, ``patterns``.

The only place that reads ``os.environ`` and configures logging. In stdio mode stdout is the MCP wire, so
logs go to stderr; lines that are true command output (``check``, ``demo``) are marked ``# cli-output``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from server.config import Config, DatabaseLocation, PostgresDatabase, database_path, load_config
from server.errors import ConfigError
from server.store.errors import StorageError

logger = logging.getLogger("server")
_QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "openai", "anthropic", "mcp", "uvicorn.access")
_OWN_LOGGERS = ("server", "tools", "resources", "prompts", "knowledge")  # the packages of this distribution
SUBCOMMANDS = ("check", "simulate-upstream", "demo", "patterns", "metrics", "keys", "workflows", "mcp-servers",
               "audit")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate-upstream":
            from server.simulator import serve_forever

            _configure_logging(args.log_level)
            serve_forever(args.host, args.port)
            return 0
        if args.command == "demo":
            from server.app.demo import run_demo

            _configure_logging("WARNING")
            return run_demo()
        config = load_config(args.config, os.environ)
        if args.command is None:  # serve: simple mode is decided there, with the collector paused
            return _serve(args, config)
        simple = _simple_mode(args)
        if args.command == "check":
            from server.app.check_cli import run_check

            location = _state_location(config, args, simple)
            _configure_logging("WARNING")
            return run_check(config, location, simple=simple, probe=args.probe,
                             replica=_replica_id(config, args, location))
        if args.command == "patterns":
            _configure_logging("WARNING")
            return _patterns(args, _state_location(config, args, simple), simple)
        if args.command == "metrics":
            from server.app.metrics_cli import print_metrics

            _configure_logging("WARNING")
            return print_metrics(config, database_path(config, os.environ, args.database), args.window,
                                 args.group_by)
        if args.command == "workflows":
            from server.app.workflows_cli import run as run_workflows_command

            _configure_logging("WARNING")
            return run_workflows_command(args, config, database_path(config, os.environ, args.database))
        if args.command == "audit":
            from server.app import audit_cli

            _configure_logging("WARNING")
            return audit_cli.run(args, config, database_path(config, os.environ, args.database))
        if args.command == "mcp-servers":
            from server.app import mcp_servers_cli

            _configure_logging("WARNING", config.secrets())
            return mcp_servers_cli.run(args, config)
        from server.app import keys_cli  # the command left: keys

        _configure_logging("WARNING")
        return keys_cli.run(args, database_path(config, os.environ, args.database))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)  # cli-output (stderr)
        return 2
    except StorageError as exc:  # the database cannot be opened (names it and why) or failed on a command
        print(f"storage error: {exc}", file=sys.stderr)  # cli-output (stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _common_options(*, for_subcommand: bool) -> argparse.ArgumentParser:
    # A subcommand's copy must not reset what was given before the subcommand name (argparse would
    # overwrite it with the subparser's default), hence SUPPRESS there.
    def default(value: object) -> object:
        return argparse.SUPPRESS if for_subcommand else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=default(None), help="TOML config file (default: "
                        "$AI_ORCHESTRATION_CONFIG, else discovery from OPENAI_API_KEY / ANTHROPIC_API_KEY / *_BASE_URL)")
    common.add_argument("--database", default=default(None), help="SQLite file, or a postgresql:// URL shared by "
                        "replicas (default: $AI_ORCHESTRATION_DB, [server].database, or the user data directory); "
                        "--simple keeps its state beside it, in the same name with .json")
    common.add_argument("--replica-id", default=default(None), help="this replica's stable, unique id on a "
                        "PostgreSQL database (its DBOS executor id; default: $AI_ORCHESTRATION_REPLICA_ID, "
                        "[server].replica_id, or the host name)")
    common.add_argument("--log-level", default=default("INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    common.add_argument("--simple", action="store_true", default=default(False),
                        help="simple mode: needs only the mcp package (wire-protocol providers, patterns in "
                        "<data dir>/state.json, call records in memory); also AI_ORCHESTRATION_SIMPLE=1")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common_options(for_subcommand=True)
    parser = argparse.ArgumentParser(
        prog="ai-orchestration-mcp",
        description="MCP server for LLM orchestration. Serves stdio by default.",
        parents=[_common_options(for_subcommand=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--transport", choices=["stdio", "sse", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="bind address for sse/http (non-loopback needs auth)")
    parser.add_argument("--port", type=int, default=8000, help="port for sse/http (default 8000)")
    parser.add_argument("--allowed-hosts", default="", help="comma-separated extra Host names the HTTP "
                        "transports answer to (DNS-rebinding protection)")
    parser.add_argument("--tools", default=None, metavar="NAME,...", help="offer only these tools, e.g. "
                        "orchestrate,consensus (default: $AI_ORCHESTRATION_TOOLS, [server] tools, else all)")
    sub = parser.add_subparsers(dest="command",
                                metavar="{check,simulate-upstream,demo,patterns,metrics,keys,workflows,mcp-servers,audit}")
    check = sub.add_parser("check", parents=[common], help="validate the configuration and list providers")
    check.add_argument("--probe", action="store_true", help="also send each provider one request of one token "
                       "and report reachability, authentication and whether the model exists")
    simulate = sub.add_parser("simulate-upstream", parents=[common],
                              help="serve a local OpenAI/Anthropic-compatible upstream for trying and testing")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8765)
    sub.add_parser("demo", help="start a simulated upstream and a server, call orchestrate and "
                   "monitor_operations through a real MCP client, and print the results")
    patterns = sub.add_parser("patterns", help="export the pattern library as GitHub Copilot files, or import them")
    actions = patterns.add_subparsers(dest="action", metavar="{export,import}", required=True)
    export = actions.add_parser("export", parents=[common], help="write .github/ Copilot instruction and prompt "
                                "files (and a manifest that makes the round trip lossless) under --out")
    export.add_argument("--format", choices=["copilot"], default="copilot")
    export.add_argument("--out", required=True, help="the repository root to write .github/ into")
    export.add_argument("--pattern", action="append", default=[], metavar="NAME",
                        help="export only this pattern (repeatable; default: all)")
    imported = actions.add_parser("import", parents=[common], help="register the patterns of a repository's "
                                  ".github/instructions and .github/prompts files")
    imported.add_argument("folder", help="the repository root (or its .github folder)")
    metrics = sub.add_parser("metrics", parents=[common], help="print the operations summary of the recorded calls "
                             "as a table")
    metrics.add_argument("--window", default="1h", help="how far back: 15m, 1h, 24h, 7d … (default 1h)")
    metrics.add_argument("--group-by", default="provider",
                         choices=["provider", "model", "tool", "ab_bucket", "workflow"])
    from server.app.audit_cli import add_parser as add_audit_parser
    from server.app.keys_cli import add_parser as add_keys_parser
    from server.app.mcp_servers_cli import add_parser as add_mcp_servers_parser
    from server.app.workflows_cli import add_parser as add_workflows_parser

    add_keys_parser(sub, common)
    add_workflows_parser(sub, common)
    add_mcp_servers_parser(sub, common)
    add_audit_parser(sub, common)
    return parser


def _configure_logging(level: str, secrets: Sequence[str] = ()) -> None:
    """stderr, every record redacted; ``level`` for our own loggers, third-party ones never below INFO: their
    DEBUG output carries request and SSE bodies (sse_starlette logs every chunk), prompts and answers included."""
    from server.security.hygiene import RedactingFormatter, redact_log_records

    numeric = logging.getLevelName(level)
    redact_log_records(secrets)
    logging.basicConfig(stream=sys.stderr, level=max(logging.INFO, numeric), force=True)
    for handler in logging.getLogger().handlers:  # every line passes the secret filter
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets))
    for name in _OWN_LOGGERS:
        logging.getLogger(name).setLevel(numeric)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric))


def _simple_mode(args: argparse.Namespace) -> bool:
    if not args.simple and not os.environ.get("AI_ORCHESTRATION_SIMPLE"):
        return False  # without importing server.app.simple (and the MCP SDK with it): `check` stays quick
    from server.app.simple import simple_mode_requested

    return simple_mode_requested(args.simple, os.environ)


def _replica_id(config: Config, args: argparse.Namespace, location: DatabaseLocation) -> str | None:
    """This replica's id on a PostgreSQL database (``None`` on SQLite: one process, DBOS's default executor)."""
    if not isinstance(location, PostgresDatabase):
        return None
    from server.workflows.replicas import replica_id

    return replica_id(config, os.environ, getattr(args, "replica_id", None))


def _state_location(config: Config, args: argparse.Namespace, simple: bool) -> DatabaseLocation:
    """The SQLite database (full mode) or the JSON state file (simple mode)."""
    if simple:
        from server.app.simple import state_path

        return state_path(config, os.environ, args.database)
    return database_path(config, os.environ, args.database)


def _patterns(args: argparse.Namespace, db_path: os.PathLike | str, simple: bool = False) -> int:
    import anyio

    from knowledge import PatternError, PatternRegistry
    from knowledge.copilot import read_copilot_dir, write_export
    from knowledge.library import builtin_patterns
    if simple:
        from server.app.simple import open_simple_store as open_store
    else:
        from server.app import assembly

        open_store = functools.partial(assembly.open_store, command=True)

    async def run() -> int:
        store = open_store(db_path)
        try:
            registry = PatternRegistry(store.patterns)
            await registry.load_library(builtin_patterns())
            if args.action == "export":
                patterns = [p.spec() for p in await registry.all()]
                missing = sorted(set(args.pattern) - {p.name for p in patterns})
                if missing:
                    print(f"no pattern named {', '.join(missing)}", file=sys.stderr)  # cli-output (stderr)
                    return 1
                chosen = [p for p in patterns if not args.pattern or p.name in args.pattern]
                for path in write_export(chosen, Path(args.out)):
                    print(path, file=sys.stdout)  # cli-output
                return 0
            current = {p.name: p.spec() for p in await registry.all()}
            for spec in read_copilot_dir(Path(args.folder)):
                # Content equal to the current version (a built-in included) is left as it is.
                outcome = None if current.get(spec.name) == spec else await registry.register(spec)
                state = f"version {outcome.pattern.version}" if outcome and outcome.changed else "unchanged"
                print(f"{spec.name}: {state}", file=sys.stdout)  # cli-output
            return 0
        except PatternError as exc:
            print(f"patterns {args.action}: {exc}", file=sys.stderr)  # cli-output (stderr)
            return 1
        finally:
            await store.aclose()

    return anyio.run(run)


def _serve(args: argparse.Namespace, config: Config) -> int:
    from server.app.process_settings import paused_for_start_up, quiet_served_deprecations

    quiet_served_deprecations()
    with paused_for_start_up() as serving:  # see server.app.process_settings for what this buys
        return _build_and_serve(args, config, _simple_mode(args), serving)


def _build_and_serve(args: argparse.Namespace, config: Config, simple: bool, serving: Callable[[], None]) -> int:
    import anyio

    from server.app.assembly import build_server, open_dependencies, open_store
    from server.pool.providers import build_provider, build_wire_provider
    from server.security.addresses import AddressPolicy
    from server.security.startup import check_provider_addresses, http_verifier
    from server.app.transports import check_bind_host, is_loopback, serve

    auth_on = args.transport != "stdio" and (config.auth.enabled if config.auth.enabled is not None
                                             else not is_loopback(args.host))
    if args.transport != "stdio":
        check_bind_host(args.host, auth_on)
    check_provider_addresses(config)
    enabled_tools = _enabled_tools(args.tools, config)
    db_path = _state_location(config, args, simple)
    lock = None
    if not isinstance(db_path, PostgresDatabase):  # replicas share PostgreSQL; a SQLite file serves one process
        from server.store.serving_lock import hold_serving_lock

        # Before anything opens the database or DBOS; released when this process ends, however it ends.
        lock = hold_serving_lock(db_path)
    secrets = config.secrets() + ([db_path.password] if isinstance(db_path, PostgresDatabase) and db_path.password
                                  else [])
    replica = None
    if isinstance(db_path, PostgresDatabase) and config.workflows.runtime == "dbos":
        from server.workflows.replicas import hold_replica_id

        # Before anything is served: a second process with a held id is refused here (ReplicaIdInUse).
        replica = hold_replica_id(db_path, _replica_id(config, args, db_path) or "",
                                  wait_s=config.workflows.replica_wait_s,
                                  interval_s=config.workflows.takeover_interval_s)
    allowed = [h for h in args.allowed_hosts.split(",") if h.strip()]
    if simple:
        from server.app.simple import build_simple_server as build, open_simple_store as open_state

        providers = functools.partial(build_wire_provider, policy=AddressPolicy.from_settings(config.network))
    else:
        from server.app.process_settings import import_without

        # sqlite-utils without the numpy it would import, at the store's first use (on the store's thread)
        build = build_server
        open_state = functools.partial(open_store, import_library=functools.partial(import_without, "sqlite_utils"))
        providers = functools.partial(build_provider, policy=AddressPolicy.from_settings(config.network))

    # Simple mode: runs in memory (the in-memory workflow runtime) and no tracing.
    workflow_runtime = None if simple else _workflow_runtime(config, db_path, replica)
    telemetry = None
    if not simple:
        from server.operations.telemetry import Telemetry, TelemetrySettings

        telemetry = Telemetry.from_settings(TelemetrySettings.from_environ(os.environ),  # None unless OTEL_* ask
                                            secrets=config.secrets())

    async def run() -> None:
        async with open_dependencies(config, store_factory=lambda: open_state(db_path), provider_factory=providers,
                                     workflow_runtime=workflow_runtime, telemetry=telemetry,
                                     simple=simple) as deps:
            # Replicas seal the SDK's request state with one key, kept in their shared database.
            keys = [await deps.store.shared_key("request-state")] if getattr(deps.store, "shared", False) else None
            mcp = build(config, store_factory=lambda: deps.store, provider_factory=providers, shared=deps,
                        enabled_tools=enabled_tools, **({"request_state_keys": keys} if keys else {}))
            _configure_logging(args.log_level, secrets)  # after MCPServer(), which configures logging
            logger.info("serving %s%s; %d provider(s); %s %s; authentication %s", args.transport,
                        " (simple mode)" if simple else "", len(config.providers),
                        "state file" if simple else "database", db_path, "on" if auth_on else "off")
            verifier = http_verifier(config, deps.store.keys) if auth_on else None
            serving()  # collections on again, tuned for serving
            if auth_on and config.auth.jwt is None and not await deps.store.keys.list_api_keys():
                logger.warning("authentication is on and no API key exists, so every request will get 401: "
                               "create one with `ai-orchestration-mcp keys create NAME`")
            dashboard = None
            if args.transport != "stdio":
                from server.app.dashboard import dashboard_mounter

                dashboard = dashboard_mounter(deps, verifier)
                if config.hooks and args.transport == "http":
                    from server.app.webhooks import hooks_mounter

                    dashboard = hooks_mounter(deps, verifier, dashboard)
            async with anyio.create_task_group() as group:
                group.start_soon(_freeze_once_warm, deps.warm_up)
                await serve(mcp, args.transport, host=args.host, port=args.port, allowed_hosts=allowed,
                            verifier=verifier, limits=config.limits, jwt=config.auth.jwt, dashboard=dashboard,
                            replica_id=replica.id if replica is not None else None)
                group.cancel_scope.cancel()

    _configure_logging(args.log_level, secrets)
    try:
        anyio.run(run)
    finally:
        if telemetry is not None:
            telemetry.shutdown()  # exports what is still batched
        if replica is not None:
            replica.close()
        if lock is not None:
            lock.close()
    return 0


async def _freeze_once_warm(warm_up: Any) -> None:
    """Once the warm start has imported the provider SDKs (and DBOS), keep the collector off their modules."""
    from server.app.process_settings import freeze_long_lived

    if warm_up is not None:
        await warm_up.done.wait()
        freeze_long_lived()


TOOLS_ENV = "AI_ORCHESTRATION_TOOLS"


def _enabled_tools(option: str | None, config: Config) -> list[str] | None:
    """The tools to offer: ``--tools``, else ``$AI_ORCHESTRATION_TOOLS``, else ``[server] tools``, else all (``None``).

    Raises:
        ConfigError: an unknown tool name (the message lists the valid ones) or an empty list.
    """
    from tools import TOOL_NAMES

    source, text = ("--tools", option) if option is not None else (TOOLS_ENV, os.environ.get(TOOLS_ENV))
    if text is not None:
        names = [name.strip() for name in text.split(",") if name.strip()]
    elif config.server.tools is not None:
        source, names = "server.tools", list(config.server.tools)
    else:
        return None
    unknown = [name for name in names if name not in TOOL_NAMES]
    if unknown or not names:
        problem = f"unknown tool(s) {', '.join(unknown)}" if unknown else "no tool named"
        raise ConfigError(f"{problem}; valid: {', '.join(TOOL_NAMES)}", key=source)
    return names


def _workflow_runtime(config: Config, db_path: DatabaseLocation, replica: Any = None) -> Any:
    """The DBOS runtime factory, which the workflow service opens in the background (:mod:`server.workflows.lazy`:
    launched by the warm start, :mod:`server.app.warmup`, or at its first use); or ``None`` for the in-memory one
    (``[workflows] runtime = "memory"``).

    DBOS's system database is ``[workflows] system_database`` if set, else beside the server's: the same
    PostgreSQL database (DBOS's tables in its own ``dbos`` schema, executor id = the replica id, runs on the
    shared queue), or ``<database>.dbos.sqlite``.
    """
    if config.workflows.runtime == "memory":
        return None

    def dbos(interpreter: Any) -> Any:
        from server.workflows.dbos_runtime import APPLICATION_VERSION, dbos_config, dbos_runtime

        configured = config.workflows.system_database
        if isinstance(db_path, PostgresDatabase):
            system, executor_id = configured or db_path.url, replica.id if replica is not None else None
        else:
            from server.store.serving_lock import database_executor_id

            # Beside the database, the system database is as exclusive as the database's serving lock and keeps
            # DBOS's default executor id ("local"); a configured one may be shared by several servers, so each
            # recovers only its own runs, under an id of its database.
            system = configured or str(Path(db_path).with_suffix(".dbos.sqlite"))
            executor_id = database_executor_id(db_path) if configured else None
        settings = dbos_config(system, application_version=config.workflows.application_version
                               or APPLICATION_VERSION, executor_id=executor_id)
        return dbos_runtime(settings, replica=replica,
                            queue_concurrency=config.workflows.queue_concurrency)(interpreter)

    def preload() -> None:  # the warm start imports DBOS on a worker thread before it launches it
        import server.workflows.dbos_runtime  # noqa: F401

    dbos.preload = preload  # type: ignore[attr-defined]
    return dbos


def _version() -> str:
    from server import __version__  # not server.app.assembly: `check` and the other subcommands stay quick

    return __version__
