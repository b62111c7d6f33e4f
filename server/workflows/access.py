"""Who may see, start and decide workflow runs: ownership (the run record's ``owner``), the caller's own run ids,
and an approval step's ``approvers`` / ``not_starter`` rules (separation of duties: the approver is always the
authenticated principal, recorded with the decision)."""

from __future__ import annotations

import hashlib

from server.security import ROLE_RANK, Principal
from server.workflows.status import PlannedStep


def refusal(step: PlannedStep, caller: Principal, owner: str | None) -> str | None:
    """Why ``caller`` may not decide ``step`` of a run started by ``owner``, or ``None``."""
    if step.not_starter and caller.owner_id == owner:
        return "the principal that started the run may not decide it (not_starter); ask another approver"
    if step.approvers and not named(step.approvers, caller):
        return f"needs an approver among {', '.join(step.approvers)}; you are {caller.id} (role {caller.role})"
    if not step.approvers and not visible(owner, caller.owner_filter):
        return "only the run's owner or an admin may decide it"
    return None


def named(approvers: tuple[str, ...], caller: Principal) -> bool:
    """Whether an ``approvers`` list admits ``caller``: a role name admits that role and higher ones, any other
    entry one principal id."""
    return any(caller.id == entry or (entry in ROLE_RANK and ROLE_RANK[caller.role] >= ROLE_RANK[entry])
               for entry in approvers)


def visible(owner: str | None, owner_filter: str | None) -> bool:
    """Whether a caller with ``owner_filter`` may see a run of ``owner`` (``None`` filter: every run)."""
    return owner_filter is None or owner == owner_filter


def _owner_tag(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:12]


def own_id(run_id: str, owner: str | None) -> str:
    """Where a caller-chosen run id is kept (run record and runtime): under the owner's tag (unauthenticated
    callers: as it is)."""
    return run_id if owner is None else f"{run_id}:{_owner_tag(owner)}"


def keys_for(run_id: str, owner: str | None) -> list[str]:
    """The stored ids ``run_id`` may name for ``owner``: its own chosen id, then a server-made (or admin-seen)
    id as it is."""
    own = own_id(run_id, owner)
    return [own] if own == run_id else [own, run_id]


def shown_id(key: str, owner: str | None, caller_owner: str | None) -> str:
    """A run's id (stored as ``key``, started by ``owner``) as the caller addresses it: its own chosen ids
    without the tag."""
    if caller_owner is not None and owner == caller_owner:
        suffix = f":{_owner_tag(caller_owner)}"
        if key.endswith(suffix):
            return key[:-len(suffix)]
    return key
