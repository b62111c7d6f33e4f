"""``/health`` (liveness) and ``/ready`` (readiness) for load balancers and orchestrators.

Both are unauthenticated and say nothing but ``ok`` / ``ready`` / ``not ready`` (no versions, no reasons):
a probe needs the status code, and a stranger learns nothing. ``/ready`` answers 200 once the store answers
a one-row read within :data:`READY_TIMEOUT_S` (its stored state loaded first) and the durable workflow runtime (DBOS), when one is
configured, has launched; 503 otherwise. Starlette only, so simple mode serves them too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request
from starlette.responses import PlainTextResponse

if TYPE_CHECKING:
    from server.dependencies import Dependencies

logger = logging.getLogger(__name__)
READY_TIMEOUT_S = 2.0
_HEADERS = {"Cache-Control": "no-store"}


async def health(_: Request) -> PlainTextResponse:
    """200 while the process serves requests."""
    return PlainTextResponse("ok\n", headers=_HEADERS)


def ready_endpoint(deps: Dependencies):  # noqa: ANN201 - a Starlette endpoint
    """The ``/ready`` endpoint over ``deps``."""

    async def ready(_: Request) -> PlainTextResponse:
        if await is_ready(deps):
            return PlainTextResponse("ready\n", headers=_HEADERS)
        return PlainTextResponse("not ready\n", status_code=503, headers=_HEADERS)

    return ready


async def is_ready(deps: Dependencies) -> bool:
    """Whether the store answers (a one-row pattern-name read, through the registry) and DBOS, if configured, is up."""
    if deps.lazy_workflows is not None and not deps.lazy_workflows.durable_ready:
        return False
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            if deps.readiness is not None:
                await deps.readiness.wait()
            await deps.patterns.names(limit=1)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the class alone is logged
        logger.warning("readiness check: the store did not answer (%s)", type(exc).__name__)
        return False
    return True
