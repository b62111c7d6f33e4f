"""The dashboard's parts that need no server process: sessions and CSRF tokens, the session secret's
configuration, the DAG drawn from a workflow's Mermaid text, the SVG charts, form reading and the page templates;
and, in process through httpx2's ASGI transport over real dependencies, ``/ready`` and the agents listing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from server.app.assembly import open_dependencies
from server.app.dashboard import dashboard_mounter
from server.app.dashboard.charts import nice_ceiling, time_chart
from server.app.dashboard.dag import FlowchartError, draw, parse_flowchart
from server.app.dashboard.sessions import SessionSigner
from server.app.dashboard.web import safe_next
from server.app.transports import security_settings
from server.config import load_config
from server.dependencies import Dependencies
from server.errors import ConfigError
from server.store.errors import StorageError
from server.store.memory import MemoryStore
from server.store.memory_patterns import MemoryPatterns
from server.workflows import memory_runtime
from server.workflows.model import mermaid
from server.workflows.validation import validate
from tests.fakes import fake_config

SECRET = "s" * 40


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_cookie_reads_back_until_it_expires() -> None:
    clock = Clock()
    signer = SessionSigner(SECRET, 3600, clock=clock)
    value, session = signer.issue("ab" * 32)
    assert signer.read(value) == session and session.key_digest == "ab" * 32
    clock.now += 3599
    assert signer.read(value) == session
    clock.now += 2
    assert signer.read(value) is None


def test_a_session_signed_with_another_secret_or_edited_is_refused() -> None:
    signer = SessionSigner(SECRET, 3600)
    value, _ = signer.issue("ab" * 32)
    assert SessionSigner("t" * 40, 3600).read(value) is None  # a replica with another secret
    assert SessionSigner(SECRET, 3600).read(value) is not None  # a replica with the same secret
    payload, _, signature = value.rpartition(".")
    assert signer.read(payload + "." + signature[::-1]) is None
    assert signer.read(None) is None and signer.read("") is None and signer.read("x" * 5000) is None


def test_csrf_tokens_are_bound_to_their_session() -> None:
    signer = SessionSigner(SECRET, 3600)
    _, one = signer.issue(None)
    _, two = signer.issue(None)
    token = signer.csrf_token(one.nonce)
    assert signer.csrf_ok(one.nonce, token)
    assert not signer.csrf_ok(two.nonce, token)
    assert not signer.csrf_ok(one.nonce, None) and not signer.csrf_ok(one.nonce, "") and not signer.csrf_ok(None, token)
    assert not signer.csrf_ok(one.nonce, token[:-1] + ("A" if token[-1] != "A" else "B"))


def test_the_login_cookie_expires_after_ten_minutes() -> None:
    clock = Clock()
    signer = SessionSigner(SECRET, 3600, clock=clock)
    value, nonce = signer.login_nonce()
    assert signer.read_login_nonce(value) == nonce
    assert signer.read(value) is None  # a login cookie is no session (another salt)
    clock.now += 601
    assert signer.read_login_nonce(value) is None


def test_the_session_secret_comes_from_the_named_variable_and_is_redacted(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[dashboard]\nsession_secret_env = "TEAM_SECRET"\n')
    config = load_config(path, {"TEAM_SECRET": "x" * 32})
    assert config.dashboard.session_secret.get_secret_value() == "x" * 32
    assert "x" * 32 in config.secrets()  # every log line and error is scrubbed of it
    assert "x" * 32 not in config.model_dump_json()
    assert load_config(path, {}).dashboard.session_secret is None
    with pytest.raises(ConfigError) as error:
        load_config(path, {"TEAM_SECRET": "short-secret"})
    assert error.value.key == "TEAM_SECRET" and "at least 32" in str(error.value) and "short-secret" not in str(error.value)
    assert load_config(None, {"AI_ORCHESTRATION_SESSION_SECRET": "y" * 40}).dashboard.session_secret is not None


GATED = {"name": "gated", "steps": [
    {"id": "draft", "kind": "orchestrate", "with": {"prompt": "d"}},
    {"id": "review", "kind": "orchestrate", "with": {"prompt": "r"}},
    {"id": "gate", "kind": "approval", "depends_on": ["draft", "review"], "with": {"message": "ok?"}},
    {"id": "publish", "kind": "orchestrate", "depends_on": ["gate"], "when": {"path": "inputs.go", "op": "truthy"},
     "with": {"prompt": "p"}}]}


def test_a_workflow_dag_is_drawn_from_its_mermaid_text_in_layers() -> None:
    drawing = draw(mermaid(validate(GATED)), {"draft": "completed", "gate": "waiting"})
    nodes = {n.step_id: n for n in drawing.nodes}
    assert set(nodes) == {"draft", "review", "gate", "publish"}
    assert nodes["draft"].y == nodes["review"].y < nodes["gate"].y < nodes["publish"].y
    assert nodes["gate"].shape == "hexagon" and nodes["gate"].points and nodes["draft"].shape == "box"
    assert (nodes["draft"].status, nodes["gate"].status, nodes["publish"].status) == ("completed", "waiting", "pending")
    assert [e.conditional for e in drawing.edges] == [False, False, True]
    assert all(0 <= n.x <= drawing.width - drawing.node_w and n.y + drawing.node_h <= drawing.height
               for n in drawing.nodes)


def test_a_flowchart_of_another_form_is_refused_rather_than_drawn_partly() -> None:
    with pytest.raises(FlowchartError):
        parse_flowchart("graph LR\n  a --> b")
    with pytest.raises(FlowchartError, match="line 3"):
        parse_flowchart('flowchart TD\n    s0["a<br/>orchestrate"]\n    click s0 callback')
    with pytest.raises(FlowchartError, match="undeclared"):
        parse_flowchart('flowchart TD\n    s0["a<br/>orchestrate"]\n    s0 --> s9')
    with pytest.raises(FlowchartError, match="cycle"):
        draw('flowchart TD\n    s0["a<br/>x"]\n    s1["b<br/>x"]\n    s0 --> s1\n    s1 --> s0', {})


def test_a_long_chain_is_laid_out_without_recursion() -> None:
    steps = [{"id": "s0", "kind": "orchestrate", "with": {"prompt": "x"}}]
    steps += [{"id": f"s{i}", "kind": "orchestrate", "depends_on": [f"s{i - 1}"], "with": {"prompt": "x"}}
              for i in range(1, 1000)]
    drawing = draw(mermaid(validate({"name": "chain", "steps": steps})), {})
    assert len(drawing.nodes) == 1000 and len({n.y for n in drawing.nodes}) == 1000


def test_charts_scale_to_a_round_ceiling_and_say_when_empty() -> None:
    assert [nice_ceiling(v) for v in (0, 0.7, 3, 7, 12, 180, 2600)] == [1, 1, 5, 10, 20, 200, 5000]
    times = [0.0, 60.0, 120.0, 180.0]
    bars = time_chart("calls", "Calls", times, [0, 4, 0, 8], kind="bars", step_s=60, total="12", label="{:g}".format)
    assert not bars.empty and len(bars.bars) == 2
    assert bars.bars[1].height == pytest.approx(2 * bars.bars[0].height)
    assert bars.y_ticks[-1].label == "10" and bars.x_ticks[0].label == "00:00"
    line = time_chart("p95", "p95", times, [None, 10.0, None, 30.0], kind="line", step_s=60, total="", label=str)
    assert len(line.points.split()) == 2 and not line.empty
    assert time_chart("cost", "Cost", times, [0.0] * 4, kind="bars", step_s=60, total="", label=str).empty


@pytest.mark.parametrize("target, expected", [
    ("/dashboard/runs?status=waiting", "/dashboard/runs?status=waiting"), (None, "/dashboard"),
    ("https://evil.example/", "/dashboard"), ("//evil.example/dashboard", "/dashboard"),
    ("/dashboard//evil.example", "/dashboard"), ("/mcp", "/dashboard"), ("/dashboard\\@evil", "/dashboard")])
def test_after_login_only_dashboard_paths_are_followed(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


# -- in process, over real dependencies: /ready and the agents listing ------------------------------------------


class LaunchGate:
    """A durable runtime that has not launched until ``launch`` is set (as DBOS still launching): then the
    in-memory runtime opens."""

    def __init__(self) -> None:
        self.launch = anyio.Event()

    def __call__(self, interpreter: Any) -> AbstractAsyncContextManager[Any]:
        return self._running(interpreter)

    @asynccontextmanager
    async def _running(self, interpreter: Any) -> AsyncIterator[Any]:
        await self.launch.wait()
        async with memory_runtime()(interpreter) as runtime:
            yield runtime


class UnreachablePatterns(MemoryPatterns):
    """The in-memory pattern store, until ``down`` is set: then a name read fails as an unreachable database's."""

    down = False

    async def pattern_names(self, prefix: str, limit: int) -> list[str]:
        if self.down:
            raise StorageError("cannot open", "the pattern names", write=False)
        return await super().pattern_names(prefix, limit)


@asynccontextmanager
async def served(deps: Dependencies) -> AsyncIterator[httpx2.AsyncClient]:
    """The HTTP app's dashboard and probes over ``deps`` (authentication off), as ``http_app`` mounts them."""

    async def mcp(scope: Any, receive: Any, send: Any) -> None:  # what /mcp would be
        raise AssertionError("a dashboard or probe request reached the MCP app")

    app = dashboard_mounter(deps, None)(mcp, security_settings("127.0.0.1", 8000))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
        yield http


@pytest.mark.anyio
async def test_ready_answers_503_without_details_until_the_runtime_launches_and_while_the_store_is_down() -> None:
    store, gate, patterns = MemoryStore(), LaunchGate(), UnreachablePatterns()
    store.patterns = patterns
    async with open_dependencies(fake_config(), store_factory=lambda: store, workflow_runtime=gate) as deps, \
            served(deps) as http:
        assert deps.workflows is not None  # the service is built: its runtime is launching, held at the gate
        launching = await http.get("/ready")
        assert (launching.status_code, launching.text) == (503, "not ready\n")
        assert launching.headers["cache-control"] == "no-store"
        assert (await http.get("/health")).status_code == 200  # alive all the same
        gate.launch.set()
        with anyio.fail_after(10):
            await deps.lazy_workflows.warm()  # returns once the launch has settled
        ready = await http.get("/ready")
        assert (ready.status_code, ready.text) == (200, "ready\n")
        patterns.down = True
        down = await http.get("/ready")
        assert (down.status_code, down.text) == (503, "not ready\n")  # no reason, no storage condition
        patterns.down = False
        assert (await http.get("/ready")).status_code == 200


_AGENT_ROW = re.compile(r'<tr data-agent="([^"]+)" data-version="(\d+)"><td><code>[^<]*</code></td>'
                        r'<td class="version">(\d+)</td><td>(\w+)</td>')


@pytest.mark.anyio
async def test_the_patterns_page_lists_each_agent_with_its_version_and_says_when_there_are_none() -> None:
    config = fake_config(agents={"coder": {"description": "Writes and fixes code", "capabilities": ["code"]}})
    async with open_dependencies(config, store_factory=MemoryStore) as deps, served(deps) as http:
        registry = deps.agents.registry
        await registry.register("notes", {"description": "Drafts release notes"})
        await registry.register("notes", {"description": "Drafts and checks release notes", "providers": ["steady"]})
        page = await http.get("/dashboard/patterns")
    assert page.status_code == 200
    rows = {name: (int(version), int(shown), source) for name, version, shown, source in _AGENT_ROW.findall(page.text)}
    assert rows == {"coder": (1, 1, "config"), "notes": (2, 2, "registered")}
    assert "Drafts and checks release notes" in page.text and "Drafts release notes<" not in page.text
    assert 'id="no-agents"' not in page.text and "no agent registry" not in page.text
    async with open_dependencies(fake_config(), store_factory=MemoryStore) as deps, served(deps) as http:
        empty = await http.get("/dashboard/patterns")
    assert empty.status_code == 200 and 'id="no-agents"' in empty.text and "data-agent=" not in empty.text
    assert 'data-pattern="code-review"' in empty.text  # the patterns are listed all the same
