"""OpenTelemetry: spans and metrics with GenAI semantic conventions, exporters chosen from the standard variables.

Spans (all under ``ai_orchestration.*``):

| span | around | attributes |
| --- | --- | --- |
| ``ai_orchestration.tool.<name>`` | an MCP tool call (nests under the MCP SDK's ``tools/call <name>`` span) | ``gen_ai.tool.name`` |
| ``ai_orchestration.provider.attempt`` | one provider attempt (the provider SDK's and httpx2's spans nest under it) | ``gen_ai.operation.name``, ``gen_ai.system``, ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``, ``error.type`` |
| ``ai_orchestration.consensus.fan_out`` | a consensus fan-out | ``ai_orchestration.consensus.method``, ``…answerers`` |
| ``ai_orchestration.workflow.run`` / ``.step`` | a workflow run and its steps (:meth:`Telemetry.span`) | ``ai_orchestration.workflow.name`` … |

Metrics: ``gen_ai.client.operation.duration`` (histogram, s), ``ai_orchestration.tokens`` (counter, {token},
by ``gen_ai.token.type``), ``ai_orchestration.cost`` (counter, USD).

Prompt and completion text are recorded (``gen_ai.input.messages`` / ``gen_ai.output.messages``) only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``. Exception messages are never recorded (only the
error class), so nothing a provider echoes back (a key fragment) reaches our spans; every exporter is wrapped so
that no span (the MCP SDK's own included) leaves the process with a configured secret in it.

Semantic conventions: https://opentelemetry.io/docs/specs/semconv/gen-ai/ (spans and metrics, 2025–2026).
This module imports nothing from OpenTelemetry at import time: the SDK loads only when telemetry is switched on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.config import ProviderConfig
from server.errors import ConfigError, ProviderError

logger = logging.getLogger(__name__)
TRACER_NAME = "ai_orchestration"
SPAN_TOOL = "ai_orchestration.tool.{name}"
SPAN_ATTEMPT = "ai_orchestration.provider.attempt"
SPAN_FAN_OUT = "ai_orchestration.consensus.fan_out"
SPAN_WORKFLOW_RUN = "ai_orchestration.workflow.run"
SPAN_WORKFLOW_STEP = "ai_orchestration.workflow.step"
_EXPORTERS = {"otlp", "console", "none"}


@dataclass(frozen=True)
class TelemetrySettings:
    """What the standard ``OTEL_*`` variables ask for (read once at the entry point).

    Attributes:
        traces / metrics: exporters, each ``otlp`` or ``console`` (empty: none).
        traces_endpoint / metrics_endpoint: OTLP/HTTP URLs (``…/v1/traces``, ``…/v1/metrics``).
        capture_content: record prompt and completion text on spans.
        service_name: ``service.name`` of the resource.
        metric_interval_s: how often metrics are exported.
    """

    traces: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    capture_content: bool = False
    service_name: str = "ai-orchestration-mcp"
    metric_interval_s: float = 60.0

    @property
    def enabled(self) -> bool:
        return bool(self.traces or self.metrics)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> TelemetrySettings:
        """Exporters are off unless asked for: ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (``otlp``,
        ``console``, ``none``), or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``, or the per-signal
        ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``…_METRICS_ENDPOINT``), which switches OTLP on.
        ``OTEL_SDK_DISABLED=true`` turns everything off. OTLP goes over HTTP/protobuf; the exporter reads
        ``OTEL_EXPORTER_OTLP_HEADERS`` and its other standard variables itself.

        Raises:
            ConfigError: an unknown exporter, or ``OTEL_EXPORTER_OTLP_PROTOCOL`` other than ``http/protobuf``.
        """
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls()
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
        protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip()
        if protocol != "http/protobuf":
            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use http/protobuf")

        def signal(name: str, path: str) -> tuple[tuple[str, ...], str | None]:
            endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{name}_ENDPOINT", "").strip() or (
                f"{base}/{path}" if base else "")
            raw = environ.get(f"OTEL_{name}_EXPORTER", "").strip().lower()
            exporters = tuple(e.strip() for e in raw.split(",") if e.strip()) if raw else (
                ("otlp",) if endpoint else ())
            bad = [e for e in exporters if e not in _EXPORTERS]
            if bad:
                raise ConfigError(f"OTEL_{name}_EXPORTER: unknown exporter {bad[0]!r} (use otlp, console or none)")
            exporters = tuple(e for e in exporters if e != "none")
            if "otlp" in exporters and not endpoint:
                endpoint = f"http://localhost:4318/{path}"  # the OTLP/HTTP default
            return exporters, endpoint or None

        traces, traces_endpoint = signal("TRACES", "v1/traces")
        metrics, metrics_endpoint = signal("METRICS", "v1/metrics")
        capture = environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() == "true"
        interval_ms = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
        return cls(traces=traces, metrics=metrics, traces_endpoint=traces_endpoint,
                   metrics_endpoint=metrics_endpoint, capture_content=capture,
                   service_name=environ.get("OTEL_SERVICE_NAME", "").strip() or cls.service_name,
                   metric_interval_s=float(interval_ms) / 1000 if interval_ms.isdigit() else 60.0)


class Telemetry:
    """Our tracer and instruments over given providers (tests pass in-memory ones).

    Args:
        tracer_provider / meter_provider: OpenTelemetry SDK providers (either may be ``None``: no spans /
            no metrics).
        capture_content: record prompt and completion text on attempt spans.
    """

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None, *,
                 capture_content: bool = False) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.capture_content = capture_content
        self.tracer = tracer_provider.get_tracer(TRACER_NAME) if tracer_provider is not None else None
        if meter_provider is not None:
            meter = meter_provider.get_meter(TRACER_NAME)
            self.duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                                   description="Duration of provider attempts")
            self.tokens = meter.create_counter("ai_orchestration.tokens", unit="{token}",
                                               description="Tokens used by provider attempts")
            self.cost = meter.create_counter("ai_orchestration.cost", unit="USD",
                                             description="Cost of provider attempts")
        else:
            self.duration = self.tokens = self.cost = None

    @classmethod
    def from_settings(cls, settings: TelemetrySettings, *, set_global: bool = True,
                      secrets: Sequence[str] = ()) -> Telemetry | None:
        """The exporters ``settings`` ask for; ``None`` when they ask for none.

        With ``set_global`` the providers become OpenTelemetry's global ones, so the MCP SDK's own spans
        (``tools/call …``, ``MCP send …``) and any provider-SDK instrumentation join the same traces. Every span
        exporter is wrapped in :class:`~server.operations.span_redaction.RedactingSpanExporter` with
        ``secrets``: no span of any instrumentation leaves with a secret in it.
        """
        if not settings.enabled:
            return None
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create({"service.name": settings.service_name})
        tracer_provider = meter_provider = None
        if settings.traces:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

            from server.operations.span_redaction import RedactingSpanExporter

            tracer_provider = TracerProvider(resource=resource)
            for name in settings.traces:
                if name == "otlp":
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                    exporter: Any = OTLPSpanExporter(endpoint=settings.traces_endpoint)
                else:
                    exporter = ConsoleSpanExporter(out=sys.stderr)  # stdout is the MCP wire in stdio mode
                tracer_provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exporter, secrets)))
        if settings.metrics:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

            readers = []
            for name in settings.metrics:
                if name == "otlp":
                    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

                    metric_exporter: Any = OTLPMetricExporter(endpoint=settings.metrics_endpoint)
                else:
                    metric_exporter = ConsoleMetricExporter(out=sys.stderr)
                readers.append(PeriodicExportingMetricReader(
                    metric_exporter, export_interval_millis=settings.metric_interval_s * 1000))
            meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        if set_global:
            from opentelemetry import metrics, trace

            if tracer_provider is not None:
                trace.set_tracer_provider(tracer_provider)
            if meter_provider is not None:
                metrics.set_meter_provider(meter_provider)
        logger.info("OpenTelemetry on: traces %s, metrics %s", ",".join(settings.traces) or "off",
                    ",".join(settings.metrics) or "off")
        return cls(tracer_provider, meter_provider, capture_content=settings.capture_content)

    def shutdown(self) -> None:
        """Flush and stop the exporters (bounded by the SDK's own timeouts)."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:
                    logger.warning("telemetry shutdown failed", exc_info=True)

    # -- spans ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None, *, kind: str = "INTERNAL"
             ) -> Iterator[Any]:
        """A span under the current one; yields it (``None`` without a tracer). Exceptions mark it as an error
        with their class name only."""
        if self.tracer is None:
            yield None
            return
        from opentelemetry.trace import SpanKind, StatusCode

        with self.tracer.start_as_current_span(name, kind=getattr(SpanKind, kind), attributes=dict(attributes or {}),
                                               record_exception=False, set_status_on_exception=False) as span:
            try:
                yield span
            except BaseException as exc:
                error_type = getattr(exc, "error_class", None) or type(exc).__name__
                span.set_attribute("error.type", error_type)
                span.set_status(StatusCode.ERROR, error_type)
                raise

    def instrument_factory(self, factory: Callable[[ProviderConfig], Any]) -> Callable[[ProviderConfig], Any]:
        """``factory`` with each provider it builds wrapped in :class:`InstrumentedProvider`."""

        @functools.wraps(factory)
        def build(config: ProviderConfig) -> Any:
            return InstrumentedProvider(factory(config), config, self)

        return build


def span(telemetry: Telemetry | None, name: str, attributes: Mapping[str, Any] | None = None
         ) -> contextlib.AbstractContextManager[Any]:
    """:meth:`Telemetry.span`, or nothing when telemetry is off."""
    return contextlib.nullcontext() if telemetry is None else telemetry.span(name, attributes)


class InstrumentedProvider:
    """A provider that reports each attempt as a span and to the metrics; otherwise the wrapped provider, every
    delegated method written out (pydantic-ai's ``InstrumentedModel`` does the same)."""

    def __init__(self, inner: Any, config: ProviderConfig, telemetry: Telemetry) -> None:
        self._inner = inner
        self._config = config
        self._telemetry = telemetry
        self.name = getattr(inner, "name", config.name)
        self.model = getattr(inner, "model", config.model)

    async def prepare(self) -> None:
        """The wrapped provider's one-time set-up, if it has one."""
        prepare = getattr(self._inner, "prepare", None)
        if prepare is not None:
            await prepare()

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self._inner.aclose()

    async def complete(self, request: Any) -> Any:
        config, telemetry = self._config, self._telemetry
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.system": config.kind, "gen_ai.provider.name": config.kind,
            "gen_ai.request.model": config.model, "gen_ai.request.max_tokens": request.max_tokens,
            "ai_orchestration.provider": config.name,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if telemetry.capture_content:
            messages = ([{"role": "system", "content": request.system}] if request.system else []) + [
                {"role": m.role, "content": m.content} for m in request.messages]
            attributes["gen_ai.input.messages"] = json.dumps(messages, ensure_ascii=False)
        metric_attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": config.kind,
                             "gen_ai.request.model": config.model, "ai_orchestration.provider": config.name}
        started = time.perf_counter()
        with telemetry.span(SPAN_ATTEMPT, attributes, kind="CLIENT") as current:
            try:
                completion = await self._inner.complete(request)
            except BaseException as exc:
                error_type = exc.error_class if isinstance(exc, ProviderError) else "cancelled" \
                    if not isinstance(exc, Exception) else type(exc).__name__
                if telemetry.duration is not None:
                    telemetry.duration.record(time.perf_counter() - started,
                                              {**metric_attributes, "error.type": error_type})
                raise
            usage = completion.usage
            if current is not None:
                current.set_attributes({"gen_ai.response.model": completion.model,
                                        "gen_ai.usage.input_tokens": usage.input_tokens,
                                        "gen_ai.usage.output_tokens": usage.output_tokens})
                if completion.finish_reason:
                    current.set_attribute("gen_ai.response.finish_reasons", [completion.finish_reason])
                if telemetry.capture_content:
                    current.set_attribute("gen_ai.output.messages", json.dumps(
                        [{"role": "assistant", "content": completion.text}], ensure_ascii=False))
        if telemetry.duration is not None:
            telemetry.duration.record(time.perf_counter() - started, metric_attributes)
            telemetry.tokens.add(usage.input_tokens, {**metric_attributes, "gen_ai.token.type": "input"})
            telemetry.tokens.add(usage.output_tokens, {**metric_attributes, "gen_ai.token.type": "output"})
            telemetry.cost.add(config.cost_usd(usage.input_tokens, usage.output_tokens), metric_attributes)
        return completion
