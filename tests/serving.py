"""Helpers for tests that run the server as a real process: free ports, readiness, raw JSON-RPC over stdio."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SERVER_COMMAND = [sys.executable, "-m", "server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """The test's (isolated) environment for a server subprocess, with the repo importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return env


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Return once ``port`` accepts connections; fail if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # bounded-wait: a port opening in another process; the deadline bounds it
    raise AssertionError(f"port {port} not ready within {timeout_s} s")


class RawStdioSession:
    """JSON-RPC over a server process's stdin/stdout, line-delimited (MCP stdio transport, handshake era)."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(
            SERVER_COMMAND + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=server_env(), text=True, bufsize=1,
        )
        self._next_id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, *, notify: bool = False) -> int | None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        request_id = None
        if not notify:
            self._next_id += 1
            request_id = message["id"] = self._next_id
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return request_id

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"server closed stdout; stderr: {self.process.stderr.read()}")
        return json.loads(line)  # any non-JSON line on stdout is a failure: stdout is the wire

    def initialize(self) -> dict[str, Any]:
        self.send("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                 "clientInfo": {"name": "raw-test", "version": "0"}})
        reply = self.receive()
        self.send("notifications/initialized", notify=True)
        return reply

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        request_id = self.send("tools/call", {"name": tool, "arguments": arguments})
        while True:
            reply = self.receive()
            if reply.get("id") == request_id:
                return reply

    def close(self, timeout_s: float = 20.0) -> int:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        code = self.process.wait(timeout_s)
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()
        return code
