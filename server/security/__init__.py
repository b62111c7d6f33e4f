"""Who is calling, and what they may do: principals, roles and ownership.

Authentication happens on the HTTP transports (:mod:`server.security.http`); a tool reads the outcome with
:func:`caller`. Without authentication (stdio, in-memory clients, loopback HTTP with auth off) the caller is
:data:`LOCAL`, the machine's own trusted user, with role ``admin`` and no ownership boundary.

Roles: ``user`` may call tools and read resources; ``admin`` may also register or change patterns, save
workflows, run inline workflow definitions with ``tool`` steps and acknowledge incidents
(:func:`require_role`). Ownership: state addressed by server-made ids (``continuation_id``, ``run_id``)
belongs to the principal that created it; :meth:`Principal.owner_filter` is what a store lookup filters
on, so another ``user`` gets "not found".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from server.errors import OrchestrationError

Role = Literal["user", "admin"]
ROLE_RANK = {"user": 1, "admin": 2}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    Attributes:
        id: stable owner id: ``key:<key id>`` for API keys, ``jwt:<issuer>#<subject>`` for JWTs, ``local``.
        role: ``user`` or ``admin``.
        authenticated: ``False`` only for :data:`LOCAL`.
    """

    id: str
    role: Role
    authenticated: bool = True

    @property
    def owner_filter(self) -> str | None:
        """The owner id a lookup must match, or ``None`` (admins and the local user see everything)."""
        return None if self.role == "admin" else self.id

    @property
    def owner_id(self) -> str | None:
        """The owner recorded on new state (``None`` when unauthenticated)."""
        return self.id if self.authenticated else None


LOCAL = Principal("local", "admin", authenticated=False)
INCIDENT_RESPONSE = Principal("system:incidents", "admin")
"""The principal an incident's ``run_workflow`` response starts its run under (its model calls are screened and
recorded as this principal's)."""
SCHEDULER = Principal("system:scheduler", "admin")
"""The principal a schedule's tick starts its run under (:mod:`server.workflows.schedules`)."""
METRIC_TRIGGERS = Principal("system:triggers", "admin")
"""The principal a metric trigger starts its run under (:mod:`server.operations.triggers`)."""


def hook_principal(name: str) -> Principal:
    """The principal a webhook's runs start under: ``system:hook:<name>`` (:mod:`server.workflows.hooks`)."""
    return Principal(f"system:hook:{name}", "admin")


def run_principal(owner: str | None) -> Principal:
    """The principal a workflow run's steps act for, from the run's recorded owner id: the local user for runs
    started without authentication, a system principal (``system:…``) as itself, else the starter's id (as a
    ``user``: the policy and the response cache need only the id, and a step can continue only the starter's own
    conversations)."""
    if owner is None:
        return LOCAL
    if owner.startswith("system:"):
        return Principal(owner, "admin")
    return Principal(owner, "user")


class Forbidden(OrchestrationError):
    """The caller's role does not allow the action."""


def require_role(principal: Principal, role: Role, action: str) -> None:
    """Refuse ``action`` unless ``principal`` has at least ``role``.

    Raises:
        Forbidden: with a message naming the action and the role it needs.
    """
    if ROLE_RANK[principal.role] < ROLE_RANK[role]:
        raise Forbidden(f"{action} needs role {role}; this API key has role {principal.role}")


def principal_from_scope(scope: Any) -> Principal:
    """The principal an ASGI scope's authenticated user carries (see :mod:`server.security.verifiers`)."""
    user = scope.get("user") if hasattr(scope, "get") else None
    token = getattr(user, "access_token", None)
    if token is None:
        return LOCAL
    claims = token.claims or {}
    principal = claims.get("principal")
    if isinstance(principal, Principal):
        return principal
    return Principal(f"client:{token.client_id}", "user")


def caller(ctx: Any) -> Principal:
    """The principal of the MCP request ``ctx`` belongs to (:data:`LOCAL` when not authenticated)."""
    try:
        request = ctx.request_context.request
    except (AttributeError, ValueError, LookupError):
        return LOCAL
    scope = getattr(request, "scope", None)
    return LOCAL if scope is None else principal_from_scope(scope)
