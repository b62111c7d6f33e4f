"""A client that pings an MCP server from a process of its own, for tests that bound the server's responsiveness
while another client loads it.

In the test's own process, a ping's round trip would also count the time the loading client spends on its event
loop (parsing and validating a 200 KB result holds that loop for tens of milliseconds), so the figure would be
the test's, not the server's. Run as ``python -m tests.pinger URL`` with the bearer key in ``PINGER_KEY``: it opens
a handshake-era session with raw JSON-RPC, prints ``ready``, then one round trip (seconds) per line, a ping every
``PINGER_PACE_S`` (default 0.01 s), until it is terminated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
from anyio.streams.buffered import BufferedByteReceiveStream

REPO = Path(__file__).resolve().parents[1]
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "pinger",
                                                                                          "version": "0"}}}


class Pings:
    """The round trips (seconds) the pinger process has reported so far, in order."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self._arrived = anyio.Event()

    def add(self, latency: float) -> None:
        self.latencies.append(latency)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait_for(self, count: int) -> None:
        """Until at least ``count`` round trips are in (bound it with the caller's ``fail_after``)."""
        while len(self.latencies) < count:
            await self._arrived.wait()


@asynccontextmanager
async def pinging(url: str, key: str, *, pace_s: float = 0.01) -> AsyncIterator[Pings]:
    """The pinger process pinging ``url`` with ``key`` throughout the block (its first ping answered before the
    block starts); yields its :class:`Pings` as they arrive.

    Raises:
        AssertionError: a ping failed (the pinger exits with the reply it got), or the pinger did not start.
    """
    pings = Pings()
    env = {**os.environ, "PINGER_KEY": key, "PINGER_PACE_S": str(pace_s)}
    async with await anyio.open_process([sys.executable, "-m", "tests.pinger", url], env=env, cwd=REPO,
                                        stderr=subprocess.STDOUT) as process:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(60):
            first = await lines.receive_until(b"\n", 65_536)
        assert first == b"ready", first.decode(errors="replace")
        failure: list[str] = []

        async def read() -> None:
            try:
                while True:
                    line = (await lines.receive_until(b"\n", 65_536)).decode()
                    try:
                        pings.add(float(line))
                    except ValueError:
                        failure.append(line)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                pass

        async with anyio.create_task_group() as group:
            group.start_soon(read)
            try:
                yield pings
            finally:
                process.terminate()
        assert not failure, "\n".join(failure)


async def _main(url: str, key: str, pace_s: float) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        opened = await http.post(url, content=json.dumps(INITIALIZE),
                                 headers={**HEADERS, "Authorization": f"Bearer {key}"})
        await opened.aread()
        headers = {**HEADERS, "Authorization": f"Bearer {key}", "Mcp-Protocol-Version": "2025-11-25",
                   "Mcp-Session-Id": opened.headers["mcp-session-id"]}
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        for number in range(2, sys.maxsize):
            started = time.perf_counter()
            reply = await http.post(url, json={"jsonrpc": "2.0", "id": number, "method": "ping"}, headers=headers)
            elapsed = time.perf_counter() - started
            if reply.status_code != 200 or '"result"' not in reply.text:
                sys.exit(f"ping {number}: {reply.status_code} {reply.text[:200]}")
            print("ready" if number == 2 else f"{elapsed:.6f}", flush=True)
            await anyio.sleep(pace_s)  # bounded-wait, pacing: a client checking in a hundred times a second


if __name__ == "__main__":
    anyio.run(_main, sys.argv[1], os.environ["PINGER_KEY"], float(os.environ.get("PINGER_PACE_S", "0.01")))
