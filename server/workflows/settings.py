"""The configuration tables of governance, triggers and the audit trail: ``[[governance.rules]]``,
``[hooks.NAME]``, ``[[triggers]]`` and ``[audit]`` (part of :class:`server.config.Config`; only pydantic here,
so simple mode loads them too).

Governance rules are checked when a workflow is saved and again when a run starts
(:mod:`server.workflows.governance`); each selects workflows by ``tag`` and/or by name (``workflows``), and a
rule that names neither applies to every workflow.
"""

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TOOL_NAME = r"^[A-Za-z0-9_.-]{1,64}\.[A-Za-z0-9_.-]{1,128}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Rule(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    """How violations name the rule (default ``governance.rules[N]``)."""
    tag: str | None = Field(default=None, min_length=1, max_length=64)
    """The rule applies to workflows with this tag …"""
    workflows: tuple[str, ...] = ()
    """… or to the workflows of these names (neither given: to every workflow)."""

    def applies_to(self, name: str, tags: tuple[str, ...]) -> bool:
        if self.tag is None and not self.workflows:
            return True
        return (self.tag is not None and self.tag in tags) or name in self.workflows


class ApprovalBeforeTools(_Rule):
    """Every ``tool`` step (sub-workflows' too) needs an ``approval`` step upstream of it."""

    kind: Literal["approval_before_tools"]


class MaxCostPerRun(_Rule):
    """A run's estimated cost (:func:`server.workflows.governance.estimate_cost_usd`, an upper bound from each
    model step's ``max_tokens``, prompt length, attempts and the dearest provider it may use) is at most
    ``max_usd``."""

    kind: Literal["max_cost_per_run"]
    max_usd: float = Field(gt=0, le=1_000_000)


class AllowedProviders(_Rule):
    """Model steps may use only ``providers``: each ``orchestrate``, ``consensus`` and ``pattern`` step must name
    its ``providers`` (and a consensus ``judge``) from this list; the pool's default choice is refused."""

    kind: Literal["allowed_providers"]
    providers: tuple[str, ...] = Field(min_length=1)


class AttendedSteps(_Rule):
    """Steps that may never run unattended: a step of one of ``step_kinds``, or a ``tool`` step calling one of
    ``tools`` (``server.tool``), needs an ``approval`` step upstream when nobody is attending: in a workflow
    with schedules (checked on save) and in a run started by a schedule, a webhook, a metric trigger or an
    incident (a ``system:`` principal; checked on start)."""

    kind: Literal["attended_steps"]
    step_kinds: tuple[Literal["orchestrate", "consensus", "pattern", "tool", "workflow"], ...] = ()
    tools: tuple[Annotated[str, Field(pattern=TOOL_NAME)], ...] = ()

    @model_validator(mode="after")
    def _something_listed(self) -> "AttendedSteps":
        if not self.step_kinds and not self.tools:
            raise ValueError("attended_steps needs `step_kinds` or `tools`")
        return self


GovernanceRule = Annotated[ApprovalBeforeTools | MaxCostPerRun | AllowedProviders | AttendedSteps,
                           Field(discriminator="kind")]


class GovernanceSettings(_Strict):
    """The ``[governance]`` table: ``[[governance.rules]]``, each of a ``kind`` above."""

    rules: tuple[GovernanceRule, ...] = ()


class HookSettings(_Strict):
    """One ``[hooks.NAME]`` table: ``POST /hooks/NAME`` (HTTP mode) starts the saved workflow ``workflow`` with the
    JSON body as its inputs (:mod:`server.workflows.hooks`).

    ``auth = "hmac"``: the request carries ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` keyed by
    the secret in ``secret_env`` (GitHub's scheme). ``auth = "api_key"``: a bearer API key (any role) instead.
    The delivery id (``X-Hook-Delivery``, or GitHub's ``X-GitHub-Delivery``) makes the call idempotent.
    """

    workflow: str = Field(pattern=NAME)
    auth: Literal["hmac", "api_key"] = "hmac"
    secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret: SecretStr | None = Field(default=None, exclude=True)
    """Resolved from ``secret_env`` at load time."""
    max_body_bytes: int = Field(default=256 * 1024, ge=2, le=16 * 1024 * 1024)

    @model_validator(mode="after")
    def _secret_named(self) -> "HookSettings":
        if self.auth == "hmac" and not self.secret_env and self.secret is None:
            raise ValueError("auth = \"hmac\" needs `secret_env` (the variable holding the hook's secret)")
        return self


class TriggerSettings(_Strict):
    """One ``[[triggers]]`` entry: when ``metric`` of a provider (or of any, without ``provider``) stays above
    ``threshold`` for ``debounce_s`` (over the alert window, evaluated every ``[alerts] interval_s``), the saved
    ``workflow`` starts with the figures as inputs; then not again for ``cooldown_s``."""

    name: str = Field(pattern=NAME)
    metric: Literal["latency_p95_ms", "error_rate", "cost_per_hour_usd"]
    threshold: float = Field(ge=0)
    workflow: str = Field(pattern=NAME)
    provider: str | None = Field(default=None, min_length=1, max_length=200)
    debounce_s: float = Field(default=0.0, ge=0, le=86_400)
    cooldown_s: float = Field(default=3600.0, ge=0, le=30 * 86_400)


class AuditSettings(_Strict):
    """The ``[audit]`` table: the append-only audit trail (:mod:`server.operations.audit`)."""

    content: bool = False
    """Keep inputs and outputs themselves beside their hashes (off: hashes only)."""
    retention_days: float = Field(default=365.0, ge=1, le=36_500)
    """Entries older than this are deleted by the periodic clean-up (the only deletion there is)."""


def resolve_hook_secrets(hooks: Mapping[str, HookSettings], environ: Mapping[str, str]) -> dict[str, HookSettings]:
    """``hooks`` with each secret read from its ``secret_env`` (never echoed)."""
    resolved = {}
    for name, hook in hooks.items():
        value = environ.get(hook.secret_env) if hook.secret_env else None
        resolved[name] = hook.model_copy(update={"secret": SecretStr(value)}) if value else hook
    return resolved
