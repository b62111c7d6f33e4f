"""OpenTelemetry: span names, nesting and GenAI attributes in process; settings from the standard variables;
an OTLP/HTTP export from a real server process received by a local receiver."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.app.assembly import build_server, open_dependencies
from server.config import Config
from server.errors import ConfigError
from server.simulator import Behaviour, Upstream
from server.store.memory import MemoryStore
from server.operations.telemetry import Telemetry, TelemetrySettings
from tests.conftest import config_for, provider_entry
from tests.serving import SERVER_COMMAND, server_env

pytestmark = pytest.mark.anyio
SECRET_PROMPT = "the launch code is 0000"


class Recorded:
    def __init__(self, capture_content: bool = False) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[self.metrics]),
                                   capture_content=capture_content)

    def by_name(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for span in self.spans.get_finished_spans():
            found.setdefault(span.name, []).append(span)
        return found


async def call(config: Config, recorded: Recorded, tool: str, arguments: dict) -> dict:
    async with open_dependencies(config, store_factory=MemoryStore, telemetry=recorded.telemetry) as deps:
        async with Client(build_server(config, store_factory=lambda: deps.store, shared=deps)) as client:
            result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


def all_attribute_text(recorded: Recorded) -> str:
    return " ".join(str(v) for s in recorded.spans.get_finished_spans() for v in s.attributes.values())


async def test_orchestrate_spans_nest_and_carry_gen_ai_attributes(upstream: Upstream) -> None:
    config = config_for(provider_entry(upstream, "flaky", model="gpt-flaky", priority=1),
                        provider_entry(upstream, "steady", model="gpt-steady", priority=2,
                                       input_cost_per_mtok=1.0, output_cost_per_mtok=2.0))
    upstream.script("gpt-flaky", Behaviour(status=500))
    recorded = Recorded()
    out = await call(config, recorded, "orchestrate", {"prompt": SECRET_PROMPT})
    assert out["provider"] == "steady"
    spans = recorded.by_name()
    (tool,) = spans["ai_orchestration.tool.orchestrate"]
    failed, answered = sorted(spans["ai_orchestration.provider.attempt"], key=lambda s: s.start_time)
    assert failed.parent.span_id == tool.context.span_id == answered.parent.span_id
    assert failed.attributes["error.type"] == "server_error" and failed.attributes["gen_ai.request.model"] == "gpt-flaky"
    attributes = answered.attributes
    assert (attributes["gen_ai.operation.name"], attributes["gen_ai.system"], attributes["gen_ai.request.model"]) == (
        "chat", "openai", "gpt-steady")
    assert attributes["gen_ai.usage.input_tokens"] == out["usage"]["input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] == out["usage"]["output_tokens"] > 0
    assert "error.type" not in attributes and tool.attributes["gen_ai.tool.name"] == "orchestrate"
    assert SECRET_PROMPT not in all_attribute_text(recorded)  # no content unless opted in
    metrics = {m.name: m for rm in recorded.metrics.get_metrics_data().resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    assert metrics["gen_ai.client.operation.duration"].unit == "s"
    assert metrics["ai_orchestration.tokens"].unit == "{token}"
    assert metrics["ai_orchestration.cost"].unit == "USD"
    tokens = {p.attributes["gen_ai.token.type"]: p.value for p in metrics["ai_orchestration.tokens"].data.data_points}
    assert tokens == {"input": out["usage"]["input_tokens"], "output": out["usage"]["output_tokens"]}
    (cost,) = metrics["ai_orchestration.cost"].data.data_points
    assert cost.value == pytest.approx(out["cost_usd"])


async def test_consensus_fan_out_span_holds_every_attempt(upstream: Upstream) -> None:
    config = config_for(provider_entry(upstream, "one", model="m1"), provider_entry(upstream, "two", model="m2"))
    recorded = Recorded()
    await call(config, recorded, "consensus", {"prompt": "Capital of France?", "providers": ["one", "two"]})
    spans = recorded.by_name()
    (tool,) = spans["ai_orchestration.tool.consensus"]
    (fan_out,) = spans["ai_orchestration.consensus.fan_out"]
    assert fan_out.parent.span_id == tool.context.span_id
    attempts = spans["ai_orchestration.provider.attempt"]
    assert {a.attributes["gen_ai.request.model"] for a in attempts} == {"m1", "m2"}
    assert all(a.parent.span_id == fan_out.context.span_id for a in attempts)


async def test_workflow_run_and_step_spans_hold_the_provider_attempts(upstream: Upstream) -> None:
    config = config_for(provider_entry(upstream, "one", model="m1"))
    recorded = Recorded()
    out = await call(config, recorded, "run_workflow", {"workflow": {"name": "brief", "steps": [
        {"id": "draft", "kind": "orchestrate", "with": {"prompt": "Draft"}},
        {"id": "polish", "kind": "orchestrate", "depends_on": ["draft"],
         "with": {"prompt": "Polish {{ steps.draft.output.text }}"}}]}})
    assert out["status"] == "completed"
    spans = recorded.by_name()
    (run,) = spans["ai_orchestration.workflow.run"]
    assert (run.attributes["ai_orchestration.workflow.name"], run.attributes["ai_orchestration.workflow.run_id"]) \
        == ("brief", out["run_id"])
    steps = {s.attributes["ai_orchestration.workflow.step"]: s for s in spans["ai_orchestration.workflow.step"]}
    assert set(steps) == {"draft", "polish"} and all(s.parent.span_id == run.context.span_id for s in steps.values())
    attempts = spans["ai_orchestration.provider.attempt"]
    assert sorted(a.parent.span_id for a in attempts) == sorted(s.context.span_id for s in steps.values())


async def test_prompt_and_completion_are_recorded_only_when_opted_in(upstream: Upstream) -> None:
    config = config_for(provider_entry(upstream, "only", model="gpt-sim"))
    recorded = Recorded(capture_content=True)
    await call(config, recorded, "orchestrate", {"prompt": SECRET_PROMPT})
    (attempt,) = recorded.by_name()["ai_orchestration.provider.attempt"]
    assert SECRET_PROMPT in attempt.attributes["gen_ai.input.messages"]
    assert SECRET_PROMPT in attempt.attributes["gen_ai.output.messages"]  # the simulator echoes the prompt


def test_settings_follow_the_standard_variables() -> None:
    assert not TelemetrySettings.from_environ({}).enabled
    otlp = TelemetrySettings.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"})
    assert (otlp.traces, otlp.metrics) == (("otlp",), ("otlp",))
    assert otlp.traces_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert otlp.metrics_endpoint == "http://127.0.0.1:4318/v1/metrics"
    only_traces = TelemetrySettings.from_environ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:1/t",
                                                  "OTEL_METRICS_EXPORTER": "none"})
    assert (only_traces.traces, only_traces.metrics, only_traces.traces_endpoint) == (("otlp",), (), "http://h:1/t")
    console = TelemetrySettings.from_environ({"OTEL_TRACES_EXPORTER": "console",
                                              "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"})
    assert console.traces == ("console",) and console.capture_content and not console.metrics
    assert not TelemetrySettings.from_environ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}).enabled
    for environ, message in (({"OTEL_TRACES_EXPORTER": "jaeger"}, "unknown exporter"),
                             ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http/protobuf")):
        with pytest.raises(ConfigError, match=message):
            TelemetrySettings.from_environ(environ)
    assert Telemetry.from_settings(TelemetrySettings()) is None


class _Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[tuple[str, bytes]] = []
        self.received = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posts.append((self.path, body))
        if self.path == "/v1/traces":
            self.server.received.set()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_a_real_server_exports_spans_over_otlp_to_a_local_receiver(
        receiver: _Receiver, config_file: Path, tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    env = server_env() | {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
                          "OTEL_SERVICE_NAME": "ops-test"}
    params = StdioServerParameters(command=SERVER_COMMAND[0], args=[
        *SERVER_COMMAND[1:], "--config", str(config_file), "--database", str(tmp_path / "t.db")], env=env)
    with anyio.fail_after(60):
        async with Client(params, mode="legacy") as client:
            result = await client.call_tool("orchestrate", {"prompt": SECRET_PROMPT})
            assert not result.is_error
        await anyio.to_thread.run_sync(receiver.received.wait, 30)
    spans: dict[str, Any] = {}
    resources = set()
    for path, body in receiver.posts:
        if path != "/v1/traces":
            continue
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resources |= {a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    spans[span.name] = span
    assert resources == {"ops-test"}
    sdk_span = spans["tools/call orchestrate"]  # the MCP SDK's own server span
    tool = spans["ai_orchestration.tool.orchestrate"]
    attempt = spans["ai_orchestration.provider.attempt"]
    assert tool.parent_span_id == sdk_span.span_id and attempt.parent_span_id == tool.span_id
    assert tool.trace_id == attempt.trace_id == sdk_span.trace_id
    attributes = {a.key: a.value for a in attempt.attributes}
    assert attributes["gen_ai.request.model"].string_value == "gpt-sim"
    assert attributes["gen_ai.system"].string_value == "openai"
    assert attributes["gen_ai.usage.input_tokens"].int_value > 0
    assert attributes["gen_ai.usage.output_tokens"].int_value > 0
    assert all(SECRET_PROMPT.encode() not in body for _, body in receiver.posts)
    # Metrics leave at shutdown (the periodic reader's final export), with their units.
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    units = {metric.name: metric.unit for path, body in receiver.posts if path == "/v1/metrics"
             for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics for sm in rm.scope_metrics
             for metric in sm.metrics}
    assert {"gen_ai.client.operation.duration": "s", "ai_orchestration.tokens": "{token}",
            "ai_orchestration.cost": "USD"}.items() <= units.items()
