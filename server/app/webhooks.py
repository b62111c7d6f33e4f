"""Webhooks (HTTP mode): ``POST /hooks/{name}`` starts the saved workflow of ``[hooks.NAME]`` with the JSON body
(an object) as its inputs.

- **Host and Origin** are checked first, as on ``/mcp`` (:class:`server.security.http.HostOriginGuard`: 421 for a
  foreign Host, 403 for a foreign Origin).
- **Size**: a body over the hook's ``max_body_bytes`` gets 413, counted as it arrives (``Content-Length`` is
  checked first), before anything is parsed or verified.
- **Authentication**: ``auth = "hmac"``: ``X-Hub-Signature-256: sha256=<hex>``, the HMAC-SHA256 of the raw body
  keyed by the hook's secret (GitHub's scheme, compared in constant time); ``auth = "api_key"``:
  ``Authorization: Bearer <API key>`` as on ``/mcp`` (any role). Missing or wrong: 401, nothing started.
- **Idempotency**: the delivery id (``X-Hook-Delivery``, or GitHub's ``X-GitHub-Delivery``; required) makes the
  run id ``hook-<name>-<delivery id>``: the same delivery again answers 200 with the run it started, and starts
  nothing; the same id with another body is 409.
- The run starts under the system principal ``system:hook:<name>`` through the workflow service (governance,
  ceilings, policy, audit), and the answer (202) is the run id, durable before it is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from server.errors import OrchestrationError
from server.security import hook_principal

logger = logging.getLogger(__name__)
PREFIX = "/hooks/"
SIGNATURE_HEADER = "x-hub-signature-256"
DELIVERY_HEADERS = ("x-hook-delivery", "x-github-delivery")
DELIVERY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class _TooLarge(Exception):
    pass


def signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=`` and the hex HMAC-SHA256 keyed by ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhooks:
    """The ASGI app behind ``/hooks/``.

    Args:
        hooks: ``[hooks.NAME]`` (:class:`server.workflows.settings.HookSettings`).
        workflows: returns the workflow service (``None``: workflows unavailable: 503).
        verifier: the ``/mcp`` bearer verifier, for ``auth = "api_key"`` hooks (``None``: authentication is off,
            and such hooks accept the machine's own user, as ``/mcp`` does).
    """

    def __init__(self, hooks: Mapping[str, Any], workflows: Callable[[], Any], verifier: Any | None) -> None:
        self.hooks = dict(hooks)
        self._workflows = workflows
        self._verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = await self._handle(scope, receive)
        await JSONResponse(body, status_code=status)(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        name = scope["path"][len(PREFIX):]
        hook = self.hooks.get(name)
        if hook is None:
            return 404, {"error": f"no webhook named {name!r}"}
        if scope["method"] != "POST":
            return 405, {"error": "webhooks take POST"}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            raw = await _read(receive, headers, hook.max_body_bytes)
        except _TooLarge:
            return 413, {"error": f"the body is over this hook's limit of {hook.max_body_bytes} bytes"}
        refusal = await self._authenticate(hook, headers, raw)
        if refusal is not None:
            return 401, {"error": refusal}
        delivery = next((headers[h] for h in DELIVERY_HEADERS if h in headers), None)
        if delivery is None or not DELIVERY_PATTERN.match(delivery):
            return 400, {"error": "a delivery id is required (X-Hook-Delivery or X-GitHub-Delivery: 1-64 of "
                                  "A-Z a-z 0-9 _ . : -): it makes a redelivery start nothing new"}
        try:
            inputs = json.loads(raw)
        except (ValueError, RecursionError):
            return 400, {"error": "the body is not JSON"}
        if not isinstance(inputs, dict):
            return 400, {"error": "the body must be a JSON object (the workflow's inputs)"}
        return await self._start(name, hook.workflow, inputs, delivery)

    async def _authenticate(self, hook: Any, headers: Mapping[str, str], raw: bytes) -> str | None:
        """``None`` when the request is authentic, else why not (nothing of the secret or token in it)."""
        if hook.auth == "hmac":
            if hook.secret is None:
                return f"this hook's secret is not set (the variable {hook.secret_env} is empty)"
            given = headers.get(SIGNATURE_HEADER, "")
            if not hmac.compare_digest(given.encode(), signature(hook.secret.get_secret_value(), raw).encode()):
                return f"missing or wrong {SIGNATURE_HEADER} (sha256=<hex HMAC-SHA256 of the body>)"
            return None
        if self._verifier is None:
            return None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token or await self._verifier.verify_token(token.strip()) is None:
            return "a valid API key is required (Authorization: Bearer <key>)"
        return None

    async def _start(self, name: str, workflow: str, inputs: dict[str, Any], delivery: str
                     ) -> tuple[int, dict[str, Any]]:
        from server.security.limits import CeilingExceeded
        from server.store import StorageError
        from server.workflows.model import InvalidWorkflow, RunConflict, WorkflowNotFound

        service = self._workflows()
        if service is None:
            return 503, {"error": "workflows are not available in this server"}
        run_id = f"hook-{name}-{delivery}"
        try:
            shown, started = await service.start(workflow, inputs, run_id, caller=hook_principal(name))
        except WorkflowNotFound as exc:
            return 404, {"error": str(exc)}
        except RunConflict:
            return 409, {"error": f"delivery {delivery} was received before with another body"}
        except InvalidWorkflow as exc:
            return 422, {"error": str(exc)}
        except CeilingExceeded as exc:
            return 429, {"error": str(exc)}
        except StorageError as exc:
            return 503, {"error": str(exc)}
        except OrchestrationError as exc:  # governance refusals and the like: the message says why
            return 422, {"error": str(exc)}
        logger.info("webhook %s: delivery %s %s run %s", name, delivery, "started" if started else "had started",
                    shown)
        return (202 if started else 200), {"run_id": shown, "started": started, "uri": f"workflows://runs/{shown}"}


async def _read(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The request body, refused (:class:`_TooLarge`) once over ``limit`` bytes."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _not_ready(scope: Scope, receive: Receive, send: Send) -> None:
    from starlette.responses import PlainTextResponse

    await PlainTextResponse("not ready: the server could not load its stored state; try again\n",
                            status_code=503)(scope, receive, send)


def hooks_mounter(deps: Any, verifier: Any | None, inner: Callable[[Any, Any], Any] | None = None
                  ) -> Callable[[Any, Any], Any]:
    """A mounter for :func:`server.app.transports.http_app`: ``/hooks/…`` to :class:`Webhooks` behind the Host and
    Origin check; everything else to ``inner`` (the dashboard's mounter) or the MCP app."""
    from server.security.http import HostOriginGuard

    def mount(app: Any, security: Any) -> Any:
        rest = inner(app, security) if inner is not None else app
        hooks = HostOriginGuard(Webhooks(deps.config.hooks, lambda: deps.workflows, verifier), security)

        async def route(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"].startswith(PREFIX):
                readiness = getattr(deps, "readiness", None)
                if readiness is not None and not readiness.ready:  # a hook's run spends, and may use patterns
                    try:
                        await readiness.wait()
                    except Exception:  # noqa: BLE001 - logged by the loading; the sender may retry
                        await _not_ready(scope, receive, send)
                        return
                await hooks(scope, receive, send)
                return
            await rest(scope, receive, send)

        return route

    return mount

