"""``ai-orchestration-mcp mcp-servers list``: the downstream MCP servers of the config and the tools each offers.

Each configured server is reached the way workflow ``tool`` steps reach it (the same session pool, address
policy and stderr redaction), asked for its tools, and closed again. Exit code 0 when every server answered,
1 when one could not be reached.
"""

from __future__ import annotations

import argparse
import sys

from server.config import Config


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the ``mcp-servers`` subcommand."""
    servers = sub.add_parser("mcp-servers", help="the downstream MCP servers workflow tool steps call")
    actions = servers.add_subparsers(dest="action", metavar="{list}", required=True)
    listing = actions.add_parser("list", parents=[common], help="list each configured server and its tools")
    listing.add_argument("--server", action="append", default=[], metavar="NAME",
                         help="only this server (repeatable; default: all)")


def run(args: argparse.Namespace, config: Config) -> int:
    """Carry out ``mcp-servers list``. Returns the exit code."""
    import anyio

    from server.security.addresses import AddressPolicy
    from server.workflows.downstream import DownstreamServers
    from server.workflows.steps import StepFailed

    if not config.mcp_servers:
        print("no MCP servers configured (add [mcp_servers.NAME] tables to the config file)",  # cli-output
              file=sys.stdout)
        return 0
    unknown = sorted(set(args.server) - set(config.mcp_servers))
    if unknown:
        configured = ", ".join(sorted(config.mcp_servers))
        print(f"no MCP server named {', '.join(unknown)}; configured: {configured}", file=sys.stderr)  # cli-output
        return 2
    servers = DownstreamServers(config.mcp_servers, config.secrets(), policy=AddressPolicy.from_settings(config.network))

    async def main() -> int:
        failures = 0
        async with anyio.create_task_group() as group:
            group.start_soon(servers.serve)
            for name in args.server or servers.names:
                print(f"{name} ({servers.describe(name)})", file=sys.stdout)  # cli-output
                try:
                    listed = await servers.tools(name)
                except StepFailed as exc:
                    failures += 1
                    print(f"  {exc}", file=sys.stdout)  # cli-output
                    continue
                for tool in listed:
                    summary = tool["description"].strip().splitlines()[0] if tool["description"].strip() else ""
                    print(f"  {tool['name']}: {summary}" if summary else f"  {tool['name']}", file=sys.stdout)  # cli-output
                if not listed:
                    print("  (no tools)", file=sys.stdout)  # cli-output
            group.cancel_scope.cancel()  # closes every session
        return 1 if failures else 0

    return anyio.run(main)
