"""A small downstream MCP server for workflow `tool` steps: `python tests/downstream_mcp.py [--http PORT]`.

Tools: `echo` (returns its text), `add` (structured sum), `fail_times` (fails the first N calls per key, then
answers), `sleep` (waits), `work` (scripted work; `work_log`, `work_calls` and `work_count` report its calls, each
with its start time and `X-Caller` header), `boom` (always an error result), `count` (how often a key was called),
`headers` (the HTTP headers a call arrived with), `refuse_quoting_header` (a JSON-RPC error quoting a request
header), `pid` (this process's id), `crash` (exits the process at once),
`say_env` (writes an environment variable's value to stderr, and answers an error quoting it).

`DOWNSTREAM_STARTUP_DELAY_S` in the environment: wait that long before serving (a slow-starting server). At
start the server writes the value of `DOWNSTREAM_SECRET` (if set) to stderr, as a careless server might.
"""

from __future__ import annotations

import json
import os
import sys
import time

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

mcp = MCPServer("downstream-test")
calls: dict[str, int] = {}


@mcp.tool(description="Return the text.")
def echo(text: str) -> str:
    return text


class Sum(BaseModel):
    sum: float


@mcp.tool(description="Add two numbers.")
def add(a: float, b: float) -> Sum:
    return Sum(sum=a + b)


@mcp.tool(description="Fail the first `times` calls for `key`, then answer ok.")
def fail_times(key: str, times: int) -> str:
    calls[key] = calls.get(key, 0) + 1
    if calls[key] <= times:
        raise ToolError(f"failure {calls[key]} of {times}")
    return f"ok after {calls[key]} calls"


@mcp.tool(description="Sleep for `seconds`.")
async def sleep(seconds: float) -> str:  # bounded-wait, pacing: the tool below
    await anyio.sleep(seconds)  # bounded-wait, pacing: the tool's work takes `seconds`
    return "slept"


invocations: dict[str, list[float]] = {}
callers: dict[str, list[str]] = {}
"""Per (run, step), parallel to ``invocations``: the `X-Caller` header each `work` call arrived with."""


@mcp.tool(description="Work for a while: the n-th call for (run, step) sleeps seconds[n] (the last one after "
                      "that); returns 'step[text]'. Each call's start time and `X-Caller` header are logged.")
async def work(run: str, step: str, ctx: Context, text: str = "", seconds: list[float] | None = None) -> str:
    request = getattr(ctx.request_context, "request", None)
    starts = invocations.setdefault(f"{run}/{step}", [])
    starts.append(time.time())
    callers.setdefault(f"{run}/{step}", []).append(request.headers.get("x-caller", "") if request else "")
    durations = seconds or [0.0]
    await anyio.sleep(durations[min(len(starts) - 1, len(durations) - 1)])  # bounded-wait, pacing: the work's scripted duration
    return f"{step}[{text}]"


@mcp.tool(description="Start times of every `work` call of a run, by step.")
def work_log(run: str) -> str:
    prefix = f"{run}/"
    return json.dumps({k[len(prefix):]: v for k, v in invocations.items() if k.startswith(prefix)})


@mcp.tool(description="Every `work` call of a run, by step: [start time, X-Caller header] in call order.")
def work_calls(run: str) -> str:
    prefix = f"{run}/"
    return json.dumps({k[len(prefix):]: list(zip(v, callers[k])) for k, v in invocations.items()
                       if k.startswith(prefix)})


@mcp.tool(description="How many `work` calls have started for runs whose id starts with `prefix`.")
def work_count(prefix: str) -> int:
    return sum(len(v) for k, v in invocations.items() if k.startswith(prefix))


@mcp.tool(description="Always fails.")
def boom() -> str:
    raise ToolError("boom")


@mcp.tool(description="The HTTP request headers this call arrived with (name: value), empty over stdio.")
def headers(ctx: Context) -> str:
    request = getattr(ctx.request_context, "request", None)
    return json.dumps(dict(request.headers) if request is not None else {})


@mcp.tool(description="How many times fail_times was called for `key`.")
def count(key: str) -> int:
    return calls.get(key, 0)


@mcp.tool(description="Refuse the call with a JSON-RPC error that quotes the HTTP header `name` (a careless server).")
def refuse_quoting_header(name: str, ctx: Context) -> str:
    from mcp import MCPError

    request = getattr(ctx.request_context, "request", None)
    value = request.headers.get(name, "") if request is not None else ""
    raise MCPError(-32602, f"refused: {name} {value} is not accepted here")


@mcp.tool(description="This server process's id.")
def pid() -> int:
    return os.getpid()


@mcp.tool(description="Exit the process at once, without answering.")
def crash() -> str:
    os._exit(3)


@mcp.tool(description="Write the value of environment variable `name` to stderr and fail, quoting it.")
def say_env(name: str) -> str:
    value = os.environ.get(name, "")
    print(f"{name} is {value}", file=sys.stderr, flush=True)
    raise ToolError(f"cannot use {name}={value}")


if __name__ == "__main__":
    time.sleep(float(os.environ.get("DOWNSTREAM_STARTUP_DELAY_S", "0")))  # bounded-wait, pacing: a server slow to start, on request
    if os.environ.get("DOWNSTREAM_SECRET"):
        print(f"starting with secret {os.environ['DOWNSTREAM_SECRET']}", file=sys.stderr, flush=True)
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        mcp.run()
