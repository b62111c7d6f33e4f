"""The ``ai-orchestration-mcp`` command: serve (default), ``check``, ``simulate-upstream``, ``demo``, ``patterns``.

The only place that reads ``os.environ`` and configures logging. In stdio mode stdout is the MCP wire, so
logs go to stderr; lines that are true command output (``check``, ``demo``) are marked ``# cli-output``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from server.config import Config, database_path, load_config
from server.errors import ConfigError

logger = logging.getLogger("server")
_QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "openai", "anthropic", "mcp", "uvicorn.access")
SUBCOMMANDS = ("check", "simulate-upstream", "demo", "patterns", "keys")


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
            from server.demo import run_demo

            _configure_logging("WARNING")
            return run_demo()
        config = load_config(args.config, os.environ)
        if args.command == "check":
            return _check(config, database_path(config, os.environ, args.database))
        if args.command == "patterns":
            _configure_logging("WARNING")
            return _patterns(args, database_path(config, os.environ, args.database))
        if args.command == "keys":
            from server.security import keys_cli

            _configure_logging("WARNING")
            return keys_cli.run(args, database_path(config, os.environ, args.database))
        return _serve(args, config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
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
    common.add_argument("--database", default=default(None), help="SQLite file (default: $AI_ORCHESTRATION_DB, "
                        "[server].database, or the user data directory)")
    common.add_argument("--log-level", default=default("INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"])
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
    sub = parser.add_subparsers(dest="command", metavar="{check,simulate-upstream,demo,patterns,keys}")
    sub.add_parser("check", parents=[common], help="validate the configuration and list providers")
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
    from server.security.keys_cli import add_parser as add_keys_parser

    add_keys_parser(sub, common)
    return parser


def _configure_logging(level: str, secrets: Sequence[str] = ()) -> None:
    from server.security.hygiene import RedactingFormatter

    logging.basicConfig(stream=sys.stderr, level=level, force=True)
    for handler in logging.getLogger().handlers:  # every line passes the secret filter
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets))
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _check(config: Config, db_path: os.PathLike | str) -> int:
    out = sys.stdout
    print(f"configuration: {config.source}", file=out)  # cli-output
    print(f"database: {db_path}", file=out)  # cli-output
    print(f"routing strategy: {config.routing.strategy}", file=out)  # cli-output
    if not config.providers:
        print("providers: none configured (tools that need a model will say what to set)", file=out)  # cli-output
        return 0
    not_ready = 0
    for p in config.providers:
        problem = p.readiness()
        not_ready += problem is not None
        if problem:
            state = f"NOT READY: {problem}"
        elif p.api_key is not None:
            state = f"ready (key from {p.key_env or 'config file'})"
        else:
            state = "ready (no key: custom endpoint)"
        endpoint = p.base_url or "vendor default endpoint"
        print(f"  {p.name:<20} {p.kind:<10} {p.model:<28} priority={p.priority:<4} {endpoint}  {state}",  # cli-output
              file=out)
    return 1 if not_ready else 0


def _patterns(args: argparse.Namespace, db_path: os.PathLike | str) -> int:
    import anyio

    from knowledge import PatternError, PatternRegistry
    from knowledge.copilot import read_copilot_dir, write_export
    from knowledge.library import builtin_patterns
    from server.app import open_store

    async def run() -> int:
        store = open_store(db_path)
        try:
            registry = PatternRegistry(store)
            await registry.load_library(builtin_patterns())
            if args.action == "export":
                patterns = [p.spec() for p in await registry.all()]
                missing = sorted(set(args.pattern) - {p.name for p in patterns})
                if missing:
                    print(f"no pattern named {', '.join(missing)}", file=sys.stderr)
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
            print(f"patterns {args.action}: {exc}", file=sys.stderr)
            return 1
        finally:
            await store.aclose()

    return anyio.run(run)


def _serve(args: argparse.Namespace, config: Config) -> int:
    import anyio

    from server.app import build_server, open_dependencies, open_store
    from server.security.startup import check_provider_addresses, http_verifier
    from server.transports import check_bind_host, is_loopback, serve

    auth_on = args.transport != "stdio" and (config.auth.enabled if config.auth.enabled is not None
                                             else not is_loopback(args.host))
    if args.transport != "stdio":
        check_bind_host(args.host, auth_on)
    check_provider_addresses(config)
    db_path = database_path(config, os.environ, args.database)
    allowed = [h for h in args.allowed_hosts.split(",") if h.strip()]

    async def run() -> None:
        async with open_dependencies(config, store_factory=lambda: open_store(db_path)) as deps:
            mcp = build_server(config, store_factory=lambda: deps.store, shared=deps)
            _configure_logging(args.log_level, config.secrets())  # after MCPServer(), which configures logging
            logger.info("serving %s; %d provider(s); database %s; authentication %s", args.transport,
                        len(config.providers), db_path, "on" if auth_on else "off")
            verifier = http_verifier(config, deps.store) if auth_on else None
            if auth_on and config.auth.jwt is None and not await deps.store.list_api_keys():
                logger.warning("authentication is on and no API key exists, so every request will get 401: "
                               "create one with `ai-orchestration-mcp keys create NAME`")
            await serve(mcp, args.transport, host=args.host, port=args.port, allowed_hosts=allowed,
                        verifier=verifier, limits=config.limits, jwt=config.auth.jwt)

    _configure_logging(args.log_level, config.secrets())
    anyio.run(run)
    return 0


def _version() -> str:
    from server.app import server_version

    return server_version()
