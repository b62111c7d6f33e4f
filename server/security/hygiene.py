"""Secret hygiene at the edges: log lines and tool errors are redacted before they leave the process.

The core never puts a credential into a message (see :mod:`server.security.redact`), but text from elsewhere can
carry one: pydantic validation errors quote the offending ``input_value``, the SDK logs a failing tool's
message, a caller may paste a key into an argument that an error message names. Two nets catch those:

- :func:`redact_log_records` and :class:`RedactingFormatter`, installed by the entry point: every log record
  (whatever handler writes it, tracebacks included) and every formatted line has configured secrets and
  key-shaped strings replaced by ``[redacted]``.
- :func:`redact_tool_errors`, an MCP server middleware: an error result of ``tools/call`` (and a protocol
  error's message) gets the same treatment, and validation errors lose their ``input_value=…`` quotes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from server.security.redact import redact

_INPUT_VALUE = re.compile(r",\s*input_value=.*?,\s*input_type=\w+\]", re.DOTALL)


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` without pydantic's ``input_value`` quotes and with secrets and key shapes redacted."""
    return redact(_INPUT_VALUE.sub("]", text), secrets)


class RedactingFormatter(logging.Formatter):
    """A formatter whose output never carries ``secrets`` or key-shaped strings."""

    def __init__(self, fmt: str | None = None, secrets: Sequence[str] = ()) -> None:
        super().__init__(fmt)
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record), self._secrets)


_ORIGINAL_FACTORY = logging.getLogRecordFactory()


def redact_log_records(secrets: Sequence[str] = ()) -> None:
    """Make every log record of the process carry only redacted text, whichever handler formats it.

    Handlers that the entry point does not own (DBOS's own stderr handler, a library's) use their own
    formatters, so :class:`RedactingFormatter` cannot reach them; this replaces the record factory instead:
    each record's message is formatted and redacted when it is made (only records a logger will emit are made),
    and its traceback text likewise. Calling it again replaces the secrets. Entry points only: it is a
    process-wide setting.
    """
    cleaned = tuple(secrets)
    formatter = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = _ORIGINAL_FACTORY(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format keeps its parts; the formatter scrubs it
            return record
        record.msg, record.args = scrub(message, cleaned), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(formatter.formatException(record.exc_info), cleaned)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, cleaned)
        return record

    logging.setLogRecordFactory(factory)


def redact_tool_errors(secrets: Callable[[], Sequence[str]] = tuple) -> Callable[..., Any]:
    """An MCP server middleware (``MCPServer(middleware=[...])``) that scrubs error results and errors."""

    async def middleware(ctx: Any, call_next: Callable[[Any], Any]) -> Any:
        try:
            result = await call_next(ctx)
        except Exception as exc:
            from mcp import MCPError

            if isinstance(exc, MCPError):
                message, data = exc.error.message, exc.error.data
                cleaned = scrub(message, secrets())
                data_text = json.dumps(data, default=str) if data is not None else ""
                if cleaned != message or scrub(data_text, secrets()) != data_text:
                    raise MCPError(exc.error.code, cleaned, None) from None
            raise
        if getattr(ctx, "method", None) != "tools/call" or result is None:
            return result
        if isinstance(result, dict):
            if result.get("isError"):
                for block in result.get("content") or ():
                    if isinstance(block, dict) and isinstance(block.get("text"), str):
                        block["text"] = scrub(block["text"], secrets())
            return result
        if getattr(result, "is_error", False):
            for block in getattr(result, "content", None) or ():
                if isinstance(getattr(block, "text", None), str):
                    block.text = scrub(block.text, secrets())
        return result

    return middleware
