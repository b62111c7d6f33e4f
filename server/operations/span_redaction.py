"""A span exporter wrapper that redacts secrets from every span before it leaves the process.

Our own spans record error classes only, but spans of other instrumentation join the same traces: the MCP SDK's
client span for a downstream call sets its status description to the downstream server's error message
(``MCP send tools/call X``), which may quote a configured header or key, and records exceptions (message and
stack trace) as events. Spans are immutable once ended, so the wrapper builds redacted copies
(``ReadableSpan``, the OpenTelemetry SDK's span snapshot type) of the spans that need it and hands them to the
real exporter: the span name, status description, attributes, event names and attributes, and link attributes
pass :func:`server.security.redact.redact` (configured secrets, their partial and base64 forms, key shapes).
It runs on the batch processor's export thread, off the request path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from server.security.redact import redact


def _text(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, (tuple, list)) and any(isinstance(v, str) for v in value):
        return tuple(redact(v, secrets) if isinstance(v, str) else v for v in value)
    return value


def _attributes(attributes: Mapping[str, Any] | None, secrets: Sequence[str]) -> dict[str, Any] | None:
    if attributes is None:
        return None
    return {key: _text(value, secrets) for key, value in attributes.items()}


class RedactingSpanExporter:
    """Wraps a ``SpanExporter``; spans reach it with secrets redacted (see the module docstring).

    Args:
        inner: the real exporter (console, OTLP …).
        secrets: exact secret values to redact besides key-shaped strings.
    """

    def __init__(self, inner: Any, secrets: Iterable[str] = ()) -> None:
        self._inner = inner
        self._secrets = tuple(s for s in secrets if s)

    def export(self, spans: Sequence[Any]) -> Any:
        return self._inner.export([self._redacted(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def _redacted(self, span: Any) -> Any:
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.trace import Link, Status

        secrets = self._secrets
        status = span.status
        events = [Event(redact(e.name, secrets), _attributes(e.attributes, secrets), e.timestamp) for e in span.events]
        links = [Link(link.context, _attributes(link.attributes, secrets)) for link in span.links]
        copy = ReadableSpan(
            name=redact(span.name, secrets), context=span.context, parent=span.parent, resource=span.resource,
            attributes=_attributes(span.attributes, secrets), events=events, links=links, kind=span.kind,
            status=Status(status.status_code, redact(status.description, secrets) if status.description else None),
            start_time=span.start_time, end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)
        return span if _same(span, copy) else copy


def _same(span: Any, copy: Any) -> bool:
    """Whether redaction changed nothing (the original span, with its dropped-attribute counts, is kept then)."""
    return (span.name == copy.name and span.status.description == copy.status.description
            and dict(span.attributes or {}) == dict(copy.attributes or {})
            and [(e.name, dict(e.attributes or {})) for e in span.events]
            == [(e.name, dict(e.attributes or {})) for e in copy.events]
            and [dict(link.attributes or {}) for link in span.links] == [dict(link.attributes or {}) for link in copy.links])
