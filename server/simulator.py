"""A local LLM upstream on loopback speaking the OpenAI and Anthropic wire formats, scriptable per model.

For tests, benchmarks and trying the server without API keys. Standard library only, so it runs where nothing
else is installed. Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/messages`` (also without ``/v1``),
non-streaming; ``POST /_sim/script``, ``POST /_sim/reset`` and ``GET /_sim/requests`` for other processes.
Shapes follow https://platform.openai.com/docs/api-reference/chat/object, https://docs.anthropic.com/en/api/messages
and https://docs.anthropic.com/en/api/errors.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import re
import selectors
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

_WIRES = {"/chat/completions": "openai", "/messages": "anthropic"}  # each also under /v1
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})
_FAIL_MODEL = re.compile(r"fail-([1-5]\d\d)")
_SLOW_MODEL = re.compile(r"slow-(\d+)")
# status -> (Anthropic error type, OpenAI error type, OpenAI error code), as the real services answer.
_ERROR_KINDS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "invalid_request_error", None),
    401: ("authentication_error", "invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "invalid_request_error", None),
    404: ("not_found_error", "invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "requests", "rate_limit_exceeded"),
    529: ("overloaded_error", "server_error", None),
}
_SERVER_ERROR = ("api_error", "server_error", None)  # any other 5xx
_STOP_JOIN_S = 2.0


@dataclass(frozen=True)
class Behaviour:
    """How the simulator answers one request.

    Attributes:
        status: HTTP status to answer with; anything but 200 gets an error body in the request's wire format.
        latency_s: seconds to wait before answering; a client that disconnects meanwhile ends the request.
        text: reply text; ``None`` echoes ``"[model] <last user message>"``.
        retry_after_s: value of the ``Retry-After`` header in seconds (use with 429 / 503).
        malformed: answer 200 with a body that is not valid JSON.
        drop: close the connection without any response.
        input_tokens: reported input tokens; ``None`` counts words of all messages and the system prompt.
        output_tokens: reported output tokens; ``None`` counts words of the reply.
        error_message: the error body's message for a non-200 status (default ``"simulated HTTP <status>"``).
        finish_reason: the stop reason to report (default ``stop`` / ``end_turn``), e.g. ``content_filter``.
    """

    status: int = 200
    latency_s: float = 0.0
    text: str | None = None
    retry_after_s: float | None = None
    malformed: bool = False
    drop: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    error_message: str | None = None
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        # Checked here because behaviours also arrive as JSON through POST /_sim/script.
        if not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {self.status!r}")
        if not isinstance(self.latency_s, (int, float)) or self.latency_s < 0:
            raise ValueError(f"latency_s must be a non-negative number, not {self.latency_s!r}")


@dataclass
class RecordedRequest:
    """One completion request as the simulator saw it.

    Attributes:
        path: request path without the query string.
        wire: ``"openai"`` or ``"anthropic"``.
        model: the ``model`` field of the body (``""`` when absent or unreadable).
        body: the parsed JSON body (``{}`` when it was not a JSON object).
        headers: request headers, names lower-cased, credential values replaced by ``"<redacted>"``.
        started_at: ``time.time()`` when the body had been read.
        finished_at: ``time.time()`` when the request ended; ``None`` while in flight.
        outcome: ``"pending"``, then ``"answered"``, ``"error"``, ``"malformed"``, ``"dropped"``, ``"client_closed"``.
        tcp_nodelay: whether ``TCP_NODELAY`` was set on the accepted socket.
    """

    path: str
    wire: str
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    started_at: float
    finished_at: float | None = None
    outcome: str = "pending"
    tcp_nodelay: bool = False


class Upstream:
    """The simulated upstream: an HTTP server on a loopback port, served from a background thread.

    Args:
        host: an IPv4 loopback address; anything else raises ``ValueError`` (the simulator has no auth).
        port: TCP port; 0 picks a free one (read it back from :attr:`url`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        host = "127.0.0.1" if host == "localhost" else host
        if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}\.\d{1,3}", host):
            raise ValueError(f"the simulator binds to IPv4 loopback only, not {host!r}")
        self._address = (host, port)
        self._lock = threading.Condition()  # a condition, so wait_for_finished() can sleep until a request ends
        self._scripts: dict[str | None, tuple[collections.deque[Behaviour], bool]] = {}
        self._requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Upstream:
        """Bind and serve in a daemon thread. Returns ``self``. Raises ``OSError`` if the port is taken."""
        if self._server is None:
            self._server = _Server(self._address, self)
            # A short poll interval keeps stop() quick: shutdown() waits for the serve loop to notice.
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="simulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection, join threads (bounded). Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections(_STOP_JOIN_S)
        if self._thread is not None:
            self._thread.join(_STOP_JOIN_S)

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the Anthropic SDK's ``base_url``. Raises ``RuntimeError`` before start()."""
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the OpenAI SDK's ``base_url``."""
        return self.url + "/v1"

    def script(self, model: str | None, *behaviours: Behaviour, repeat: bool = False) -> None:
        """Queue behaviours for the next requests naming ``model``, one per request, in order.

        Calling again appends, and ``repeat`` then applies to the whole queue; no behaviours removes the queue.
        Scripts win over model-name conventions; an exhausted queue is removed.

        Args:
            model: the model name to match, or ``None`` for any model that has no queue of its own.
            behaviours: what to answer, first request first.
            repeat: keep answering with the last behaviour forever instead of returning to the default.
        """
        with self._lock:
            if not behaviours:
                self._scripts.pop(model, None)
                return
            queue, _ = self._scripts.get(model, (collections.deque(), False))
            queue.extend(behaviours)
            self._scripts[model] = (queue, repeat)

    def reset(self) -> None:
        """Forget every script and every recorded request."""
        with self._lock:
            self._scripts.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot (copies) of the completion requests seen so far, oldest first."""
        with self._lock:
            return [dataclasses.replace(r) for r in self._requests]

    def wait_for_finished(self, count: int = 1, timeout_s: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` recorded requests have an outcome; return the snapshot.

        Raises:
            TimeoutError: fewer than ``count`` requests finished within ``timeout_s`` seconds.
        """
        return self._wait(lambda: sum(r.finished_at is not None for r in self._requests) >= count, timeout_s,
                          f"fewer than {count} simulator requests finished")

    def wait_for_requests(self, count: int = 1, timeout_s: float = 5.0) -> list[RecordedRequest]:
        """:meth:`wait_for_finished` for requests that have arrived, answered or not."""
        return self._wait(lambda: len(self._requests) >= count, timeout_s, f"fewer than {count} requests arrived")

    def _wait(self, condition: Callable[[], bool], timeout_s: float, failure: str) -> list[RecordedRequest]:
        with self._lock:
            if not self._lock.wait_for(condition, timeout_s):
                raise TimeoutError(f"{failure} within {timeout_s} s")
        return self.requests

    def _next_behaviour(self, model: str) -> Behaviour:
        with self._lock:
            key: str | None = model if model in self._scripts else None
            if key in self._scripts:
                queue, repeat = self._scripts[key]
                if repeat and len(queue) == 1:
                    return queue[0]
                behaviour = queue.popleft()
                if not queue:
                    del self._scripts[key]
                return behaviour
        return _convention(model)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def _finish(self, request: RecordedRequest, outcome: str) -> None:
        with self._lock:
            request.outcome, request.finished_at = outcome, time.time()
            self._lock.notify_all()


def _convention(model: str) -> Behaviour:
    """The behaviour a model name asks for (``fail-429``, ``slow-250``, ``malformed``, ``drop``), else default."""
    if match := _FAIL_MODEL.fullmatch(model):
        status = int(match.group(1))
        return Behaviour(status=status, retry_after_s=1.0 if status == 429 else None)
    if match := _SLOW_MODEL.fullmatch(model):
        return Behaviour(latency_s=int(match.group(1)) / 1000)
    return Behaviour(malformed=model == "malformed", drop=model == "drop")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], upstream: Upstream) -> None:
        self.upstream = upstream
        self._connections: set[socket.socket] = set()
        self._connections_changed = threading.Condition()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        # Clients that write headers and body in two sends otherwise wait ~40 ms on the delayed-ACK timer.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_changed:
            self._connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self._connections_changed:
            self._connections.discard(request)
            self._connections_changed.notify_all()
        super().shutdown_request(request)

    def close_connections(self, timeout_s: float) -> None:
        """Wake every handler (idle keep-alive reads, latency waits) and wait for them to finish."""
        with self._connections_changed:
            for conn in self._connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections_changed.wait_for(lambda: not self._connections, timeout_s)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client vanishing mid-reply is normal here; socketserver would print a traceback to stderr.
        logger.debug("simulator connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so SDK connection pools reuse connections
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("simulator: " + format, *args)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/_sim/requests":
            self._send_json(200, [dataclasses.asdict(r) for r in self.server.upstream.requests])
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if wire := _WIRES.get(path.removeprefix("/v1")):
            self._complete(path, wire, body)
        elif path == "/_sim/script":
            self._control_script(body)
        elif path == "/_sim/reset":
            self.server.upstream.reset()
            self._send_json(200, {"ok": True})
        else:
            self._not_found()

    def _not_found(self) -> None:
        self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found", "code": None}})

    def _control_script(self, body: Any) -> None:
        try:
            model, behaviours = body.get("model"), [Behaviour(**b) for b in body["behaviours"]]
            if model is not None and not isinstance(model, str):
                raise TypeError(f"model must be a string or null, not {model!r}")
            self.server.upstream.script(model, *behaviours, repeat=bool(body.get("repeat", False)))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            message = 'expected {"model": str|null, "behaviours": [{Behaviour fields}], "repeat": bool}'
            self._send_json(400, {"error": {"message": f"{message}: {exc}", "type": "invalid_request_error"}})
            return
        self._send_json(200, {"ok": True, "queued": len(behaviours)})

    def _complete(self, path: str, wire: str, body: Any) -> None:
        upstream = self.server.upstream
        body = body if isinstance(body, dict) else None
        model = str(body.get("model", "")) if body else ""
        headers = {k.lower(): "<redacted>" if k.lower() in _SECRET_HEADERS else v for k, v in self.headers.items()}
        nodelay = bool(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        record = RecordedRequest(path, wire, model, body or {}, headers, time.time(), tcp_nodelay=nodelay)
        upstream._record(record)
        outcome, reply = self._answer(wire, model, body)
        # The outcome is recorded before the reply goes out: a client that has its answer must find it recorded.
        upstream._finish(record, outcome)
        if reply is None:
            return
        try:
            self._send_bytes(*reply)
        except OSError:  # the client went away while the reply was being written
            self.close_connection = True
            upstream._finish(record, "client_closed")

    def _answer(
        self, wire: str, model: str, body: dict[str, Any] | None
    ) -> tuple[str, tuple[int, bytes, dict[str, str]] | None]:
        """Decide how to answer one completion request as scripted: its outcome and the reply to send, if any."""
        if body is None or body.get("stream"):
            refusal = "streaming not supported by the simulator" if body else "request body is not a JSON object"
            return "error", _error_reply(wire, 400, refusal)
        behaviour = self.server.upstream._next_behaviour(model)
        if behaviour.latency_s > 0 and self._client_closed_within(behaviour.latency_s):
            self.close_connection = True
            return "client_closed", None
        if behaviour.drop:
            self.close_connection = True  # returning without a reply closes the socket: the client sees EOF
            return "dropped", None
        if behaviour.status != 200:
            message = behaviour.error_message or f"simulated HTTP {behaviour.status}"
            return "error", _error_reply(wire, behaviour.status, message,
                                         behaviour.retry_after_s)
        if behaviour.malformed:
            return "malformed", (200, b'{"id": "truncated', {"Content-Type": "application/json"})
        return "answered", _json_reply(200, _reply(wire, model, body, behaviour))

    def _client_closed_within(self, seconds: float) -> bool:
        """Wait ``seconds``; return True as soon as the client closes its end (EOF or reset) instead."""
        deadline = time.monotonic() + seconds
        with selectors.DefaultSelector() as selector:
            # A selector rather than select.select: no 1024-descriptor limit under load tests.
            selector.register(self.connection, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if not selector.select(remaining):
                    continue
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return True
                except OSError:
                    return True
                # Readable with data: the client pipelined its next request; it is alive, so just wait.
                time.sleep(max(0.0, deadline - time.monotonic()))
        return False

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(*_json_reply(status, payload, headers))

    def _send_bytes(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}


def _error_reply(
    wire: str, status: int, message: str, retry_after_s: float | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """An error body in the request's wire format (OpenAI ``{"error": …}``, Anthropic ``{"type": "error", …}``)."""
    anthropic_type, openai_type, openai_code = _ERROR_KINDS.get(
        status, _SERVER_ERROR if status >= 500 else _ERROR_KINDS[400]
    )
    if wire == "anthropic":
        payload: dict[str, Any] = {"type": "error", "error": {"type": anthropic_type, "message": message}}
    else:
        payload = {"error": {"message": message, "type": openai_type, "code": openai_code}}
    headers = {} if retry_after_s is None else {"Retry-After": f"{retry_after_s:g}"}
    return _json_reply(status, payload, headers)


def _text_of(content: Any) -> str:
    """Text of a message's ``content``: a string, or a list of ``{"type": "text", "text": ...}`` parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _reply(wire: str, model: str, body: dict[str, Any], behaviour: Behaviour) -> dict[str, Any]:
    """The success body in the request's wire format, with the default echo text and word-count usage."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    user_texts = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    text = behaviour.text if behaviour.text is not None else f"[{model}] " + (user_texts[-1] if user_texts else "")
    all_text = " ".join([_text_of(body.get("system")), *(_text_of(m.get("content")) for m in messages)])
    input_tokens = behaviour.input_tokens if behaviour.input_tokens is not None else max(1, len(all_text.split()))
    output_tokens = behaviour.output_tokens if behaviour.output_tokens is not None else len(text.split())
    if wire == "anthropic":
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": behaviour.finish_reason or "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": behaviour.finish_reason or "stop"}],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


def serve_forever(host: str = "127.0.0.1", port: int = 0) -> int:
    """Serve the simulator until Ctrl-C or SIGTERM; the ``simulate-upstream`` CLI subcommand.

    Prints one line with the base URLs to stdout and nothing else; logs go to stderr via :mod:`logging`.

    Args:
        host: an IPv4 loopback address.
        port: TCP port; 0 picks a free one (printed).

    Returns:
        The process exit status, 0.
    """
    stopped = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set from there
        previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        with Upstream(host, port) as up:
            print(f"openai base_url: {up.openai_base_url}  anthropic base_url: {up.url}", flush=True)  # cli-output
            with contextlib.suppress(KeyboardInterrupt):
                # wait() with a timeout so Ctrl-C is delivered promptly on every platform.
                while not stopped.wait(0.5):
                    pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
