"""Asking the person behind a waiting client to decide an approval step, through MCP form elicitation
(``elicitation/create``, MCP 2025-11-25 "Elicitation"), for :mod:`server.workflows.approval_prompts`.

Only a handshake-era client can be asked mid-call (the 2026-07-28 revision has no server-to-client requests, and
an approval opens long after the call's arguments were resolved), and only one that declared form elicitation
on a connection that carries server requests. Anyone else's approval steps wait, as always, for
``workflow_run`` approve/reject.
"""

import logging
from typing import Literal

from mcp import MCPError
from mcp.server.mcpserver import Context
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

from server.workflows.approval_prompts import ApprovalAnswer, AskApprover

logger = logging.getLogger(__name__)


class ApprovalForm(BaseModel):
    """The form the person fills in."""

    decision: Literal["approve", "reject"] = Field(description="Approve or reject this step.")
    comment: str = Field(default="", max_length=2_000, description="Why (recorded with the decision).")


def approver_asker(ctx: Context) -> AskApprover | None:
    """How to ask the person behind this request's client, or ``None`` when it cannot be asked (see the module
    docstring)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return None  # no elicitation, or URL mode only
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS or not ctx.session.can_send_request:
        return None

    async def ask(run_id: str, step: str) -> ApprovalAnswer | None:
        try:
            result = await ctx.elicit(f"Run {run_id} waits for your approval of step {step!r}. Approve or reject "
                                      "it (your decision is recorded under your identity).", ApprovalForm)
        except (MCPError, ValueError) as exc:  # the client could not ask, or answered off the form
            logger.info("run %s: asking for the approval of %s through the client failed (%s)", run_id, step,
                        type(exc).__name__)
            return None
        if result.action != "accept":
            return None
        form = result.data
        return ApprovalAnswer("approved" if form.decision == "approve" else "rejected", form.comment or None)

    return ask
