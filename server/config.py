"""Configuration: one TOML file plus the environment, loaded once at the entry point.

The schema is DESIGN.md's (``[server]``, ``[[providers]]``, ``[routing]``, ``[alerts]``). Unknown keys are
errors that name their path. Library code never reads ``os.environ``: :func:`load_config` takes the
environment as a mapping, resolves every provider's API key through :func:`resolve_api_key` and returns a
frozen :class:`Config` that the entry point passes down.
"""

import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from server.errors import ConfigError
from server.agents.settings import AgentName, AgentRoutingSettings, AgentSpec, PlannerSettings
from server.security.settings import AuthSettings, GuardrailSettings, LimitSettings, NetworkSettings
from server.store.location import DatabaseLocation, PostgresDatabase, parse_database  # noqa: F401 (re-exported)
from server.workflows.settings import (AuditSettings, GovernanceSettings, HookSettings, TriggerSettings,
                                      resolve_hook_secrets)

APP_NAME = "ai-orchestration-mcp"
ProviderKind = Literal["openai", "anthropic"]
Strategy = Literal["priority", "weighted", "least_latency", "least_cost", "least_busy", "round_robin"]

# The variable a provider of each kind reads its key from when it talks to the vendor's own endpoint.
DEFAULT_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
# What discovery configures from the environment when there is no config file: (model, in $/Mtok, out $/Mtok).
_DISCOVERED: dict[str, tuple[str, float, float]] = {
    "openai": ("gpt-4o-mini", 0.15, 0.60),
    "anthropic": ("claude-haiku-4-5", 1.00, 5.00),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    """The ``[server]`` table."""

    database: str | None = Field(default=None, min_length=1)
    """SQLite file for call records and state (default ``<user data dir>/state.db``), or a ``postgresql://`` URL
    for replicas sharing one database."""
    replica_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    """This replica's stable, unique id on a shared PostgreSQL database (``--replica-id``; default: the host
    name). It is the replica's DBOS executor id."""
    tools: tuple[str, ...] | None = None
    """The tools to offer (``--tools`` and ``AI_ORCHESTRATION_TOOLS`` override); default: all of them. Checked
    against the tool names when the server starts."""

    @field_validator("database")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            parse_database(value)
        return value


class ProviderConfig(_Strict):
    """One ``[[providers]]`` entry: a model at an endpoint, with its limits and prices."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    kind: ProviderKind
    model: str = Field(min_length=1, max_length=200)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key: SecretStr | None = None
    """Resolved at load time (see :func:`resolve_api_key`); an explicit value in the file is allowed but discouraged."""
    base_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    priority: int = Field(default=10, ge=0, le=1_000_000)
    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_concurrency: int = Field(default=8, ge=1, le=10_000)
    input_cost_per_mtok: float = Field(default=0.0, ge=0)
    output_cost_per_mtok: float = Field(default=0.0, ge=0)
    capabilities: tuple[str, ...] = ("chat",)
    context_window: int | None = Field(default=None, ge=1)
    """Tokens the model accepts (prompt + completion); a call that overflows falls back to a larger window."""
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute this provider may receive (sliding 60 s window); over it, the provider is skipped."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens per minute (estimated input + requested output), likewise."""
    daily_budget_usd: float | None = Field(default=None, ge=0)
    """Spend per UTC day; a provider over its budget is skipped."""
    reliability: float | None = Field(default=None, gt=0, lt=1)
    """Probability this provider's answer is right, for Bayesian consensus; default: estimated from how often
    it agreed with past consensus outcomes."""

    @property
    def key_env(self) -> str | None:
        """The variable this provider's key comes from, or ``None`` when none applies (custom endpoint, no ``api_key_env``).

        A custom ``base_url`` never falls back to the vendor's default variable: that would send an OpenAI key
        to whatever server the URL names.
        """
        if self.api_key_env:
            return self.api_key_env
        return None if self.base_url else DEFAULT_KEY_ENV[self.kind]

    def readiness(self) -> str | None:
        """``None`` when the provider can be called, else what to set to make it callable."""
        if self.api_key is not None or self.base_url:
            return None
        return f"set {self.key_env} (or api_key_env / base_url for provider {self.name!r})"

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """Price of one completion from the configured USD-per-million-token prices."""
        return (input_tokens * self.input_cost_per_mtok + output_tokens * self.output_cost_per_mtok) / 1_000_000


class RoutingConfig(_Strict):
    """The ``[routing]`` table: strategy, fallback and retry rule, circuit breakers, overall budget."""

    strategy: Strategy = "priority"
    max_fallbacks: int | None = Field(default=None, ge=0, le=100)
    """How many other providers a call may fall back to after the first (default: all candidates)."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries of a provider, made only once no other candidate remains and the deadline allows."""
    backoff_base_s: float = Field(default=0.25, gt=0, le=60)
    backoff_max_s: float = Field(default=8.0, gt=0, le=600)
    latency_tolerance: float = Field(default=0.25, ge=0, le=10)
    """least_latency: providers within this fraction of the best EWMA latency share the load."""
    ewma_alpha: float = Field(default=0.3, gt=0, le=1)
    rate_limit_cooldown_s: float = Field(default=10.0, ge=0, le=3600)
    """How long a 429 without Retry-After cools a provider down."""
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_min_calls: int = Field(default=5, ge=1, le=10_000)
    breaker_window_s: float = Field(default=60.0, gt=0, le=86_400)
    breaker_cooldown_s: float = Field(default=30.0, gt=0, le=86_400)
    daily_budget_usd: float | None = Field(default=None, ge=0)
    """Spend per UTC day across all providers; over it, calls that need a model are refused."""
    fallback_on_content_refused: bool = True
    """A content-policy refusal moves the call to the next provider (another model may answer); ``false`` ends
    the call with the refusal."""


class Experiment(_Strict):
    """An ``[[experiments]]`` entry: an A/B bucket (or canary) over provider sets.

    A caller key (``user_id``) is hashed with the experiment name; keys whose hash falls under ``percentage``
    get the ``variant`` providers, the others the ``control`` providers (default: the whole pool).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    percentage: float = Field(ge=0, le=100)
    variant: tuple[str, ...] = Field(min_length=1)
    control: tuple[str, ...] = ()


class CacheConfig(_Strict):
    """The ``[cache]`` table: identical temperature-0 requests answered from the store within a TTL."""

    enabled: bool = False
    ttl_s: float = Field(default=3600.0, gt=0, le=30 * 86_400)


class ConversationConfig(_Strict):
    """The ``[conversations]`` table."""

    history_token_budget: int = Field(default=8000, ge=100, le=2_000_000)
    """Estimated tokens of history replayed per call (newest turns kept)."""


AlertMetric = Literal["latency_p95_ms", "error_rate", "cost_per_hour_usd"]


class Thresholds(_Strict):
    """Thresholds over the alert window; crossing one opens an incident (see :mod:`server.operations.incidents`)."""

    latency_p95_ms: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    cost_per_hour_usd: float | None = Field(default=None, gt=0)


class ResponseAction(_Strict):
    """An ``[[alerts.responses.<metric>]]`` entry: what to do when an incident of that metric opens.

    ``open_circuit`` opens the provider's circuit for ``duration_s``; ``demote`` adds ``demote_by`` to its
    priority for ``duration_s``; ``run_workflow`` runs the saved workflow ``workflow`` with the incident as input.
    """

    action: Literal["open_circuit", "demote", "run_workflow"]
    duration_s: float = Field(default=300.0, gt=0, le=7 * 86_400)
    demote_by: int = Field(default=100, ge=1, le=1_000_000)
    workflow: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _workflow_named(self) -> "ResponseAction":
        if self.action == "run_workflow" and not self.workflow:
            raise ValueError("run_workflow needs `workflow` (a saved workflow's name)")
        return self


class AlertsConfig(Thresholds):
    """The ``[alerts]`` table: thresholds that open incidents (for every provider, each on its own calls;
    ``[alerts.providers.NAME]`` overrides them for one provider), the schedule, and automated responses."""

    window: str = Field(default="5m", pattern=r"^\s*\d+(\.\d+)?\s*[smhdw]\s*$")
    """The window each evaluation summarises."""
    interval_s: float = Field(default=30.0, ge=1, le=86_400)
    """How often thresholds are evaluated."""
    cooldown_s: float = Field(default=300.0, ge=0, le=7 * 86_400)
    """How long a metric must stay normal before its incident resolves itself."""
    min_calls: int = Field(default=5, ge=1, le=1_000_000)
    """Fewer calls in the window than this never open a latency or error-rate incident."""
    providers: dict[str, Thresholds] = Field(default_factory=dict)
    responses: dict[AlertMetric, tuple[ResponseAction, ...]] = Field(default_factory=dict)

    def for_provider(self, name: str) -> Thresholds:
        """The thresholds that apply to provider ``name`` (its own entry over the global ones)."""
        own = self.providers.get(name)
        base = {k: getattr(self, k) for k in Thresholds.model_fields}
        if own is not None:
            base.update({k: v for k, v in own.model_dump().items() if v is not None})
        return Thresholds(**base)


class OperationsConfig(_Strict):
    """The ``[operations]`` table: how call records are kept and summarised."""

    exact_window_s: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    """Windows up to this long get exact percentiles from raw records (when the raw records cover them)."""
    raw_retention_s: float = Field(default=7 * 86_400.0, ge=3600, le=366 * 86_400)
    """Raw records older than this are deleted by the roll-up; per-minute aggregates keep their totals."""
    rollup_interval_s: float = Field(default=3600.0, ge=60, le=86_400)


class McpServerConfig(_Strict):
    """One ``[mcp_servers.NAME]`` table: a downstream MCP server that workflow ``tool`` steps call, set up like an
    entry of Claude Desktop's ``mcpServers``: ``command`` + ``args`` + ``env`` (stdio), or ``url`` (Streamable
    HTTP) + ``headers``. Only the configuration names servers: a workflow definition cannot start a command."""

    command: str | None = Field(default=None, min_length=1, max_length=4_096)
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _one_transport(self) -> "McpServerConfig":
        if (self.command is None) == (self.url is None):
            raise ValueError("give either `command` (stdio) or `url` (HTTP)")
        return self


class WorkflowSettings(_Strict):
    """The ``[workflows]`` table."""

    runtime: Literal["dbos", "memory"] = "dbos"
    """``dbos``: durable runs; ``memory``: runs live in the process only."""
    system_database: str | None = None
    """DBOS's system database: a SQLite file or a ``postgresql://`` URL; default ``<database>.dbos.sqlite``."""
    application_version: str | None = Field(default=None, min_length=1, max_length=100)
    """Overrides the pinned DBOS application version (only for a deliberate migration)."""
    queue_concurrency: int = Field(default=16, ge=1, le=10_000)
    """On PostgreSQL: runs of the shared queue one replica executes at once (the rest wait for capacity)."""
    takeover_interval_s: float = Field(default=2.0, gt=0, le=3600)
    """On PostgreSQL: how often a replica looks for vanished replicas whose pending runs it resumes."""
    replica_wait_s: float = Field(default=10.0, ge=0, le=600)
    """On PostgreSQL: how long a starting replica waits for its id's lock (a survivor may hold it for a moment
    while taking over) before it is refused as a duplicate."""


class DashboardSettings(_Strict):
    """The ``[dashboard]`` table: the web dashboard at ``/dashboard`` in HTTP and SSE mode (:mod:`server.app.dashboard`)."""

    enabled: bool = True
    session_secret_env: str = Field(default="AI_ORCHESTRATION_SESSION_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The variable holding the key that signs session cookies: every replica must have the same one. Unset or
    empty: a random key per process (sessions end with the process and hold on that replica only)."""
    session_secret: SecretStr | None = Field(default=None, exclude=True)
    """Resolved from ``session_secret_env`` at load time (a value in the file is allowed, discouraged)."""
    session_ttl_s: float = Field(default=8 * 3600.0, ge=60, le=30 * 86_400)
    """How long a login lasts (the key is checked again on every request, so a revocation ends it sooner)."""
    refresh_s: float = Field(default=5.0, ge=2, le=600)
    """How often the overview and run pages fetch fresh figures (at least every 2 s)."""

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < 32:
            raise ValueError("the session secret must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return secret


class Config(_Strict):
    """The whole configuration. Build it with :func:`load_config`."""

    server: ServerSettings = ServerSettings()
    providers: tuple[ProviderConfig, ...] = ()
    routing: RoutingConfig = RoutingConfig()
    alerts: AlertsConfig = AlertsConfig()
    experiments: tuple[Experiment, ...] = ()
    cache: CacheConfig = CacheConfig()
    conversations: ConversationConfig = ConversationConfig()
    mcp_servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    workflows: WorkflowSettings = WorkflowSettings()
    operations: OperationsConfig = OperationsConfig()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    network: NetworkSettings = NetworkSettings()
    dashboard: DashboardSettings = DashboardSettings()
    agents: dict[AgentName, AgentSpec] = Field(default_factory=dict, max_length=1_000)
    agent_routing: AgentRoutingSettings = AgentRoutingSettings()
    planner: PlannerSettings = PlannerSettings()
    governance: GovernanceSettings = GovernanceSettings()
    hooks: dict[str, HookSettings] = Field(default_factory=dict)
    triggers: tuple[TriggerSettings, ...] = ()
    audit: AuditSettings = AuditSettings()
    source: str = Field(default="defaults", exclude=True)
    """Where the providers came from: a file path, ``environment`` or ``defaults``."""

    @field_validator("providers")
    @classmethod
    def _unique_names(cls, providers: tuple[ProviderConfig, ...]) -> tuple[ProviderConfig, ...]:
        seen: set[str] = set()
        for provider in providers:
            if provider.name in seen:
                raise ValueError(f"provider name {provider.name!r} is used twice")
            seen.add(provider.name)
        return providers

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        names = {p.name for p in self.providers}
        for index, provider in enumerate(self.providers):
            if not provider.capabilities:
                raise ValueError(f"providers[{index}].capabilities must not be empty")
        for index, experiment in enumerate(self.experiments):
            unknown = [n for n in (*experiment.variant, *experiment.control) if n not in names]
            if unknown:
                raise ValueError(f"experiments[{index}] names unknown provider(s): {', '.join(unknown)}")
        unknown = [n for n in self.alerts.providers if n not in names]
        if unknown:
            raise ValueError(f"alerts.providers names unknown provider(s): {', '.join(unknown)}")
        from server.security.addresses import AddressRefused, check_url

        for index, provider in enumerate(self.providers):
            try:
                check_url(provider.base_url or "https://vendor.invalid", self.network.allow_addresses,
                          self.network.deny_addresses)
            except AddressRefused as exc:
                raise ValueError(f"providers[{index}].base_url: {exc}") from None
        for name, server in self.mcp_servers.items():  # checked again after DNS before each connection
            try:
                if server.url is not None:
                    check_url(server.url, self.network.allow_addresses, self.network.deny_addresses)
            except AddressRefused as exc:
                raise ValueError(f"mcp_servers.{name}.url: {exc}") from None
        if self.routing.backoff_max_s < self.routing.backoff_base_s:
            raise ValueError("routing.backoff_max_s must be at least routing.backoff_base_s")
        return self

    def secrets(self) -> list[str]:
        """Every resolved credential, for redaction."""
        keys = [p.api_key.get_secret_value() for p in self.providers if p.api_key is not None]
        if self.dashboard.session_secret is not None:
            keys.append(self.dashboard.session_secret.get_secret_value())
        keys += [h.secret.get_secret_value() for h in self.hooks.values() if h.secret is not None]
        return keys + [v for s in self.mcp_servers.values() for v in (*s.env.values(), *s.headers.values())]


def resolve_api_key(
    provider: ProviderConfig, environ: Mapping[str, str], explicit: str | None = None
) -> SecretStr | None:
    """The one key-resolution order: explicit argument, then the config file, then the environment.

    Returns:
        The key, or ``None`` when none is set (a custom ``base_url`` such as Ollama may need none;
        :meth:`ProviderConfig.readiness` says what to set otherwise).
    """
    if explicit:
        return SecretStr(explicit)
    if provider.api_key is not None:
        return provider.api_key
    env_name = provider.key_env
    value = environ.get(env_name) if env_name else None
    return SecretStr(value) if value else None


def default_data_dir(environ: Mapping[str, str], platform: str = sys.platform) -> Path:
    """The platform's per-user data directory for this app (XDG on Linux)."""
    home = Path(environ.get("HOME") or Path.home())
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP_NAME
    if platform.startswith("win"):
        return Path(environ.get("APPDATA") or home / "AppData" / "Roaming") / APP_NAME
    return Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share") / APP_NAME


def database_path(config: Config, environ: Mapping[str, str], override: str | None = None) -> DatabaseLocation:
    """Where the state lives: ``--database``, then ``AI_ORCHESTRATION_DB``, then ``[server] database``, then
    ``<user data dir>/state.db``; a SQLite file, or a PostgreSQL database for a ``postgresql://`` URL.

    Raises:
        ConfigError: a URL of another scheme (naming where it came from).
    """
    for key, value in (("--database", override), ("AI_ORCHESTRATION_DB", environ.get("AI_ORCHESTRATION_DB")),
                       ("server.database", config.server.database)):
        if value:
            try:
                return parse_database(value)
            except ValueError as exc:
                raise ConfigError(str(exc), key=key) from None
    return default_data_dir(environ) / "state.db"


def load_config(path: str | Path | None, environ: Mapping[str, str]) -> Config:
    """Load the TOML file (or discover providers from the environment) and resolve API keys.

    Args:
        path: the TOML file; ``None`` means ``AI_ORCHESTRATION_CONFIG`` if set, else discovery.
        environ: the process environment (a mapping; the entry point passes ``os.environ``).

    Raises:
        ConfigError: unreadable file, invalid TOML, or a schema violation; ``key`` names the offending path.
    """
    path = path or environ.get("AI_ORCHESTRATION_CONFIG") or None
    if path is None:
        raw: dict = {"providers": _discover_providers(environ)}
        source = "environment" if raw["providers"] else "defaults"
    else:
        raw = _read_toml(Path(path))
        source = str(path)
    try:
        config = Config.model_validate({**raw, "source": source})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(_describe(error), key=_dotted(error["loc"])) from None
    keyed = tuple(p.model_copy(update={"api_key": resolve_api_key(p, environ)}) for p in config.providers)
    return config.model_copy(update={"providers": keyed, "dashboard": _dashboard_secret(config.dashboard, environ),
                                     "hooks": resolve_hook_secrets(config.hooks, environ)})


def _dashboard_secret(settings: DashboardSettings, environ: Mapping[str, str]) -> DashboardSettings:
    """``[dashboard]`` with its session secret read from ``session_secret_env`` (validated, never echoed).

    Raises:
        ConfigError: the variable is set but shorter than 32 characters.
    """
    value = environ.get(settings.session_secret_env)
    if not value:
        return settings
    try:
        return DashboardSettings.model_validate({**settings.model_dump(exclude={"session_secret"}),
                                                 "session_secret": value})
    except ValidationError as exc:
        raise ConfigError(str(exc.errors()[0]["msg"]).removeprefix("Value error, "),
                          key=settings.session_secret_env) from None


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None


def _discover_providers(environ: Mapping[str, str]) -> list[dict]:
    providers = []
    for priority, kind in enumerate(("openai", "anthropic"), start=1):
        prefix = kind.upper()
        key_env = DEFAULT_KEY_ENV[kind]
        base_url = environ.get(f"{prefix}_BASE_URL")
        if not environ.get(key_env) and not base_url:
            continue
        model, input_cost, output_cost = _DISCOVERED[kind]
        providers.append({"name": kind, "kind": kind, "model": environ.get(f"{prefix}_MODEL") or model,
                          "api_key_env": key_env, "base_url": base_url or None, "priority": priority,
                          "input_cost_per_mtok": input_cost, "output_cost_per_mtok": output_cost})
    return providers


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _describe(error: Mapping) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    # Never echo the offending value: it may be a secret placed under the wrong key.
    return str(error["msg"])
