"""App assembly: the dependencies object, the MCPServer with its lifespan, and the MCP surface.

This is the only module that imports the surface packages (``tools``, ``resources``, ``prompts``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mcp.server import MCPServer
from mcp.server.request_state import RequestStateSecurity
from mcp_types import Completion, CompletionArgument, CompletionContext, PromptReference, ResourceTemplateReference

from knowledge import Pattern, PatternRegistry
from knowledge.library import builtin_patterns
from server.app.sdk_seams import advertise_list_changed, connection_of, serve_resource_subscriptions
from server.app.warmup import Readiness, WarmUp, provider_steps
from server.config import Config, PostgresDatabase, parse_database
from server.errors import ConfigError
from server.operations.audit import AuditedGuardrails, AuditLog
from server.operations.incidents import IncidentService, WorkflowRunner
from server.pool.policy import Policy
from server.pool.pool import ProviderPool
from server.pool.providers import Provider, build_provider
from server.app.middleware import refuse_tools, warm_start
from server.app.protocol_logging import ProtocolLog
from server.app.run_tasks import RunTasks
from server.app.tasks import TaskBackend, TasksExtension
from server.security import INCIDENT_RESPONSE, METRIC_TRIGGERS
from server.security.hygiene import redact_tool_errors
from server.dependencies import Dependencies
from server.store import Store

if TYPE_CHECKING:
    from server.agents import AgentService
    from server.consensus.service import ConsensusService
    from server.operations.telemetry import Telemetry
    from server.operations.triggers import MetricTriggers
    from server.workflows import RuntimeFactory, StepServices
    from server.workflows.downstream import DownstreamServers
    from server.workflows.lazy import LazyWorkflows

logger = logging.getLogger(__name__)

SERVER_NAME = "ai-orchestration-mcp"
INSTRUCTIONS: tuple[tuple[str, str], ...] = (
    ("orchestrate", "`orchestrate` asks one model through the provider pool, with fallback."),
    ("consensus", "`consensus` asks several models at once and aggregates their answers."),
    ("monitor_operations", "`monitor_operations` reports latency, errors, tokens, cost, incidents and provider health."),
    ("acknowledge_incident", "`acknowledge_incident` marks an incident as being handled."),
    ("list_providers", "`list_providers` shows the providers and their health."),
    ("search_patterns", "`search_patterns` finds prompt patterns (also prompts and `knowledge://` resources)."),
    ("register_pattern", "`register_pattern` saves one."),
    ("run_workflow", "`run_workflow` runs a durable DAG of steps."),
    ("workflow_run", "`workflow_run` follows, cancels or approves runs."),
    ("save_workflow", "`save_workflow` saves a workflow definition."),
    ("register_agent", "`register_agent` saves an agent (a named role; `orchestrate(agent=…)` answers as one)."),
    ("plan_workflow", "`plan_workflow` drafts a workflow for a goal."),
)
"""(tool, sentence) of the server's instructions: one sentence per tool it offers."""


def open_store(location: str | Path | PostgresDatabase, *, command: bool = False,
               import_library: Callable[[], object] | None = None) -> Store:
    """The full-mode store: SQLite at a path (sqlite-utils imported at its first use, by ``import_library`` if
    given), or a shared PostgreSQL database. ``command``: for a short CLI command beside a serving process
    (SQLite writes wait longer for its lock). A string is read as :func:`server.store.location.parse_database`
    reads it, so a URL never becomes a SQLite file named after it.

    Raises:
        ValueError: a string URL of a scheme other than PostgreSQL's.
    """
    if isinstance(location, str):
        location = parse_database(location)
    if isinstance(location, PostgresDatabase):
        from server.store.postgres import PostgresStore

        return PostgresStore(location)
    from server.store.sqlite import BUSY_TIMEOUT_S, COMMAND_BUSY_TIMEOUT_S, SQLiteStore

    return SQLiteStore(location, busy_timeout_s=COMMAND_BUSY_TIMEOUT_S if command else BUSY_TIMEOUT_S,
                       import_library=import_library)


@asynccontextmanager
async def open_dependencies(
    config: Config,
    *,
    store_factory: Callable[[], Store],
    provider_factory: Callable[..., Provider] = build_provider,
    clock: Callable[[], float] = time.time,
    workflow_runtime: RuntimeFactory | None = None,
    run_workflow: WorkflowRunner | None = None,
    telemetry: Telemetry | None = None,
    simple: bool = False,
) -> AsyncIterator[Dependencies]:
    """Build the dependencies, run the alert/roll-up schedule while they are open, and on exit close providers
    and flush the store (shielded from cancellation).

    Args:
        store_factory: called here; the store it returns is closed (flushed) on exit.
        provider_factory: ``ProviderConfig -> Provider`` (tests pass fakes).
        workflow_runtime: runs workflows (:func:`server.workflows.dbos_runtime.dbos_runtime` in full mode);
            default: the in-memory runtime.
        run_workflow: the hook the ``run_workflow`` automated response calls (see :mod:`server.operations.incidents`);
            default: start the named saved workflow on this server's workflow service.
        telemetry: OpenTelemetry spans and metrics (``None``: off); providers are wrapped to report to it.
        simple: build simple mode's dependencies (sets :attr:`Dependencies.simple`; see :mod:`server.app.simple`).
    """
    if telemetry is not None:
        provider_factory = telemetry.instrument_factory(provider_factory)
    store = store_factory()
    try:
        # The policy layer wraps every path to a provider ([guardrails], the per-call ceilings of [limits]).
        audit = AuditLog(store.audit, content=config.audit.content, retention_s=config.audit.retention_days * 86_400,
                         secrets=config.secrets, clock=clock)
        policy = Policy.from_config(config, AuditedGuardrails(store.guardrails, audit), clock=clock,
                                    phones="pattern" if simple else "library")
        shared = getattr(store, "shared", False)  # replicas share this store (PostgreSQL)
        # Providers that [guardrails].allowed_models does not permit leave the pool there (naming one is refused).
        pool = ProviderPool([(p, provider_factory(p)) for p in config.providers], store.calls, config=config,
                            policy=policy, clock=clock, shared_spend=shared)
        patterns = PatternRegistry(store.patterns, clock=clock)
        agents = _agents(config, store, pool, patterns, clock)
    except BaseException:
        await store.aclose()
        raise
    import anyio

    async def load_stored_state() -> None:  # the first use of the store: sets it up (server.app.warmup)
        await pool.load_spend()
        await patterns.load_library(builtin_patterns())
        await agents.registry.load()  # [agents.NAME]: a new version of each that changed since the last start

    readiness = Readiness([load_stored_state])

    @functools.cache
    def consensus() -> ConsensusService:
        from server.consensus.service import ConsensusService  # with the aggregation methods, at the first consensus

        return ConsensusService(pool, telemetry=telemetry, patterns=patterns)

    try:
        downstream = _downstream_servers(config)
        workflows = _lazy_workflows(config, store, pool, consensus, patterns, clock, workflow_runtime, telemetry,
                                    downstream, audit, agents)
        if run_workflow is None:
            async def run_workflow(name: str, inputs: Mapping[str, Any]) -> str:
                await readiness.wait()  # the spend its budgets count from, the patterns its steps may use
                # Under a named system principal: its steps' model calls are screened and recorded as its.
                run_id, _ = await workflows.service().start(name, inputs, caller=INCIDENT_RESPONSE)
                return run_id

        incidents = IncidentService(store.incidents, store.calls, pool, config, clock=clock, run_workflow=run_workflow,
                                    claim=store.claim_interval if shared else None,  # once per interval, all replicas
                                    audit=audit, triggers=_triggers(config, workflows))
        steps = [("stored state", readiness.wait), *provider_steps([member.provider for member in pool.members])]
        if workflow_runtime is not None:  # a durable runtime: launched (recovering runs) once the SDKs are in
            async def launch_runtime() -> None:
                await readiness.wait()  # recovered runs and schedules spend against the stored spend
                await workflows.warm()

            steps.append(("workflow runtime", launch_runtime))
        warm_up = WarmUp(steps)
        async with _running(readiness.run), _running(workflows.serve), _running(incidents.run), \
                _running(warm_up.run), _running(audit.upkeep), \
                (_running(downstream.serve) if downstream else contextlib.nullcontext()):  # sessions closed on exit
            yield Dependencies(config=config, store=store, pool=pool, lazy_consensus=consensus, patterns=patterns,
                               clock=clock, lazy_workflows=workflows, incidents=incidents, telemetry=telemetry,
                               simple=simple, warm_up=warm_up, audit=audit, agents=agents, readiness=readiness)
    finally:
        with anyio.CancelScope(shield=True):
            await audit.flush()
            await pool.aclose()
            await store.aclose()


def _downstream_servers(config: Config) -> DownstreamServers | None:
    """The downstream MCP servers' session pool (``None`` without ``[mcp_servers]``)."""
    if not config.mcp_servers:
        return None
    from server.security.addresses import AddressPolicy
    from server.workflows.downstream import DownstreamServers

    return DownstreamServers(config.mcp_servers, config.secrets(), policy=AddressPolicy.from_settings(config.network))


def _agents(config: Config, store: Store, pool: ProviderPool, patterns: PatternRegistry,
            clock: Callable[[], float]) -> AgentService:
    """The agent registry, router and service over the store's agents and the pool."""
    from server.agents import AgentRegistry, AgentRouter, AgentService, available_providers

    registry = AgentRegistry(store.agents, config.agents, available_providers=available_providers(pool), clock=clock)
    return AgentService(registry, AgentRouter(pool, config.agent_routing, clock=clock), pool, store, config,
                        patterns=patterns, clock=clock)


def _lazy_workflows(config: Config, store: Store, pool: ProviderPool, consensus: Callable[[], ConsensusService],
                    patterns: PatternRegistry, clock: Callable[[], float], runtime: RuntimeFactory | None,
                    telemetry: Telemetry | None, downstream: DownstreamServers | None = None,
                    audit: AuditLog | None = None, agents: AgentService | None = None) -> LazyWorkflows:
    """The workflow service, built at first use; a given (durable) runtime is opened by the warm start
    (:mod:`server.app.warmup`), to recover interrupted runs without waiting for a call."""
    from server.workflows.lazy import LazyWorkflows

    def services() -> StepServices:
        from server.workflows.steps import StepServices

        return StepServices(pool=pool, store=store, config=config, consensus=consensus(), patterns=patterns,
                            tool_caller=downstream.call if downstream else None, clock=clock, telemetry=telemetry,
                            agents=agents)

    return LazyWorkflows(services, store, runtime_factory=runtime, clock=clock, delay_s=math.inf, audit=audit)


def _triggers(config: Config, workflows: LazyWorkflows) -> MetricTriggers | None:
    """The ``[[triggers]]`` (metric conditions starting saved workflows), or ``None`` without any."""
    if not config.triggers:
        return None
    from server.operations.triggers import MetricTriggers

    async def start(name: str, inputs: Mapping[str, Any], run_id: str) -> str:
        shown, _ = await workflows.service().start(name, inputs, run_id, caller=METRIC_TRIGGERS)
        return shown

    return MetricTriggers(config.triggers, start)


@asynccontextmanager
async def _running(background: Callable[[], Any]) -> AsyncIterator[None]:
    """Run ``background`` while the block runs, cancelling it after; the block's own exception propagates
    as it is (not wrapped in an exception group)."""
    import anyio

    error: BaseException | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(background)
        try:
            yield
        except BaseException as exc:  # re-raised below, outside the task group
            error = exc
        group.cancel_scope.cancel()
    if error is not None:
        raise error


def build_server(
    config: Config,
    *,
    store_factory: Callable[[], Store],
    provider_factory: Callable[..., Provider] = build_provider,
    shared: Dependencies | None = None,
    clock: Callable[[], float] = time.time,
    workflow_runtime: RuntimeFactory | None = None,
    run_workflow: WorkflowRunner | None = None,
    enabled_tools: Collection[str] | None = None,
    refused_tools: Mapping[str, str] | None = None,
    simple: bool = False,
    request_state_keys: Sequence[bytes] | None = None,
    task_backends: Sequence[TaskBackend] = (),
    protocol_log: ProtocolLog | None = None,
) -> MCPServer:
    """The MCP server with every tool, resource and prompt registered.

    Args:
        config: the loaded configuration.
        store_factory: makes the store; the lifespan opens (and closes) one per lifespan.
        shared: dependencies built by the caller and kept open across lifespans (SSE runs one lifespan per
            connection; the CLI shares one set for the process).
        enabled_tools: the tools to offer (``--tools``, ``AI_ORCHESTRATION_TOOLS``, ``[server] tools``); default:
            every tool (:data:`tools.TOOL_NAMES`).
        refused_tools: tool name -> what a call to it answers, for tools not offered; default for each tool
            left out of ``enabled_tools``: a message naming the enabled ones.
        simple: passed to :func:`open_dependencies` (simple mode assembles through :mod:`server.app.simple`).
        request_state_keys: the key ring sealing the SDK's multi-round-trip ``requestState`` (replicas pass the
            keys they share, so state minted by one unseals on another); default: a key of this process.
        task_backends: more MCP task backends, asked after the product's own (:class:`server.app.run_tasks.RunTasks`);
            the conformance fixture server adds its fixture tools' here.
        protocol_log: serves ``logging/setLevel`` and forwards notable events (default: a new one).

    Raises:
        ConfigError: a name in ``enabled_tools`` that is no tool's (the message lists the valid ones).
    """
    import prompts
    import resources
    import tools

    try:
        offered = tools.all_tools(enabled_tools)
    except ValueError as exc:
        raise ConfigError(str(exc), key="tools") from None
    names = [tool.name for tool in offered]
    refused = {name: f"the tool {name} is not enabled on this server (enabled: {', '.join(names) or 'none'}); "
                     "the --tools option, AI_ORCHESTRATION_TOOLS or [server] tools chooses them"
               for name in tools.TOOL_NAMES if name not in names}
    refused.update(refused_tools or {})

    # The latest lifespan's dependencies, for handlers that get no request context (static resources).
    current: list[Dependencies] = [shared] if shared is not None else []
    following: list[Dependencies] = []  # the shared dependencies, once their patterns are followed

    from mcp.shared.subscriptions import ResourceUpdated

    from resources.subscriptions import BridgedBus

    bus = BridgedBus(connection_of)  # ours: incident changes are announced outside any request, to both eras

    async def incidents_changed() -> None:
        from resources.operations import URIS

        for uri in URIS:
            await bus.publish(ResourceUpdated(uri=uri))

    if protocol_log is None:
        protocol_log = ProtocolLog(config.secrets)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Dependencies]:
        async with protocol_log.forwarding():
            async with _lifespan() as deps:
                yield deps

    @asynccontextmanager
    async def _lifespan() -> AsyncIterator[Dependencies]:
        if shared is not None:
            # SSE runs a lifespan per connection over the same dependencies: follow their patterns once.
            if not following:
                following.append(shared)
                await _start_following(shared, surfaces)  # for the process's life, like `shared`
                if shared.incidents is not None:
                    shared.incidents.add_listener(incidents_changed)
            async with _replicate_events(shared, bus, surfaces):
                yield shared
            return
        async with open_dependencies(
            config, store_factory=store_factory, provider_factory=provider_factory, clock=clock,
            workflow_runtime=workflow_runtime, run_workflow=run_workflow, simple=simple,
        ) as deps, _follow_patterns(deps, surfaces), _replicate_events(deps, bus, surfaces):
            current.append(deps)
            if deps.incidents is not None:
                deps.incidents.add_listener(incidents_changed)
            try:
                yield deps
            finally:
                current.remove(deps)

    mcp = MCPServer(
        SERVER_NAME, instructions=instructions(names), lifespan=lifespan, version=server_version(),
        tools=list(offered), subscriptions=bus,
        middleware=[redact_tool_errors(config.secrets),  # secret hygiene on every error a client sees
                    refuse_tools(refused), warm_start],
        request_state_security=None if request_state_keys is None else RequestStateSecurity(
            keys=list(request_state_keys)),
        extensions=[TasksExtension([RunTasks(), *task_backends])],
    )
    protocol_log.serve(mcp)
    surfaces = (resources.register(mcp, lambda: current[-1]), prompts.register(mcp, lambda: current[-1]))
    serve_resource_subscriptions(mcp, bus.on_subscribe, bus.on_unsubscribe)

    @mcp.completion()
    async def complete(ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument,
                       context: CompletionContext | None) -> Completion | None:
        deps = current[-1]
        return (await resources.complete(deps, ref, argument, context)
                or await prompts.complete(deps, ref, argument, context))

    advertise_list_changed(mcp)
    return mcp


async def _start_following(deps: Dependencies, surfaces: Sequence[_PatternSurface]) -> Callable[[Pattern], None]:
    """Fill the pattern prompts and resources from the library and keep them in step with each change the
    registry stores, once the stored state is loaded (:attr:`Dependencies.readiness`; at once without one).
    Returns the listener (to remove when the dependencies go)."""

    def follow(pattern: Pattern) -> None:
        for surface in surfaces:
            surface.upsert(pattern)

    async def fill() -> None:
        patterns = await deps.patterns.all()
        for surface in surfaces:
            surface.replace_all(patterns)
        deps.patterns.remove_listener(follow)  # once, however often a failed loading is retried
        deps.patterns.add_listener(follow)

    await (fill() if deps.readiness is None else deps.readiness.then(fill))
    return follow


@asynccontextmanager
async def _follow_patterns(deps: Dependencies, surfaces: Sequence[_PatternSurface]) -> AsyncIterator[None]:
    """:func:`_start_following` for one lifespan."""
    follow = await _start_following(deps, surfaces)
    try:
        yield
    finally:
        deps.patterns.remove_listener(follow)


EVENTS_CHANNEL = "ai_orchestration_events"


@asynccontextmanager
async def _replicate_events(deps: Dependencies, bus: Any, surfaces: Sequence[_PatternSurface]) -> AsyncIterator[None]:
    """On a store that other replicas share (PostgreSQL: ``notify`` and ``listen``), relay every event published
    on ``bus`` to them with NOTIFY, and deliver theirs here: their subscribers hear of incidents, resource updates
    and list changes made on any replica, and a pattern another replica changed joins this one's prompt and
    resource lists. Elsewhere: nothing."""
    import uuid

    import anyio
    from mcp.shared.subscriptions import ResourceUpdated

    from resources.subscriptions import event_from_payload, event_payload

    store = deps.store
    if not (hasattr(store, "notify") and hasattr(store, "listen")) or bus.relay is not None:
        yield  # not shared, or relayed already (SSE runs one lifespan per connection over one set of dependencies)
        return
    origin = uuid.uuid4().hex
    token = anyio.lowlevel.current_token()

    async def deliver(payload: str) -> None:
        parsed = event_from_payload(payload)
        if parsed is None or parsed[0] == origin:
            return
        event = parsed[1]
        if isinstance(event, ResourceUpdated) and event.uri.startswith(PATTERN_URI_PREFIX):
            name = event.uri[len(PATTERN_URI_PREFIX):]
            if "/" not in name:  # a pattern changed elsewhere: this replica's lists follow
                try:
                    pattern = await deps.patterns.get(name)
                except Exception:  # noqa: BLE001 - gone or unreadable: the next list is rebuilt anyway
                    logger.debug("pattern %s from another replica not readable", name, exc_info=True)
                else:
                    for surface in surfaces:
                        surface.upsert(pattern)
        await bus.deliver_remote(event)

    def received(payload: str) -> None:  # on the listener's thread
        try:
            anyio.from_thread.run(deliver, payload, token=token)
        except Exception:  # noqa: BLE001 - the loop is closing, or one delivery failed: others go on
            logger.debug("could not deliver an event from another replica", exc_info=True)

    listener = await anyio.to_thread.run_sync(store.listen, EVENTS_CHANNEL, received)
    bus.relay = lambda event: store.notify(EVENTS_CHANNEL, event_payload(event, origin))
    try:
        yield
    finally:
        bus.relay = None
        await anyio.to_thread.run_sync(listener.close)


PATTERN_URI_PREFIX = "knowledge://patterns/"


class _PatternSurface(Protocol):
    def replace_all(self, patterns: Sequence[Pattern]) -> None: ...

    def upsert(self, pattern: Pattern) -> None: ...


def instructions(tool_names: Collection[str]) -> str:
    """The server's instructions, naming only the tools it offers."""
    return " ".join(["Orchestrates LLM providers.", *(text for name, text in INSTRUCTIONS if name in tool_names)])


def server_version() -> str:
    """The distribution's version (:data:`server.__version__`)."""
    from server import __version__

    return __version__
