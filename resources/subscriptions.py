"""Resource-updated notifications for both protocol eras from one publish.

The 2026-07-28 era hears them on ``subscriptions/listen`` streams (the SDK's subscription bus). Handshake-era
clients (the Inspector, Claude Desktop) subscribe with ``resources/subscribe``, which ``MCPServer`` does not
serve; :class:`BridgedBus` remembers those subscriptions per connection and forwards every ``ResourceUpdated``
published on the bus to them, so a tool's ``ctx.notify_resource_updated`` and the server's own announcements
(incidents) reach both kinds of client. The app assembly serves its two handlers and says how to tell
connections apart (both through the SDK seams of :mod:`server.app.sdk_seams`).
"""

import json
import logging
from collections.abc import Callable
from typing import Any

from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp_types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

logger = logging.getLogger(__name__)


class BridgedBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, plus handshake-era ``resources/subscribe`` subscribers.

    Replicas sharing a database set :attr:`relay`: every event published here is also handed to it (the app
    sends it to the other replicas through PostgreSQL NOTIFY), and events from other replicas come in through
    :meth:`deliver_remote`, which reaches this replica's subscribers without being relayed again.

    Args:
        connection_of: a request's session -> the connection it belongs to (what a subscription lasts for).
    """

    def __init__(self, connection_of: Callable[[Any], Any] = lambda session: session) -> None:
        super().__init__()
        self._connection_of = connection_of
        # connection -> (a session on it that can notify, subscribed URIs); pruned when a send fails.
        self._legacy: dict[Any, tuple[Any, set[str]]] = {}
        self.relay: Callable[[ServerEvent], None] | None = None

    async def publish(self, event: ServerEvent) -> None:
        await self._deliver(event)
        if self.relay is not None:
            self.relay(event)

    async def deliver_remote(self, event: ServerEvent) -> None:
        """An event another replica published: to this replica's subscribers only."""
        await self._deliver(event)

    async def _deliver(self, event: ServerEvent) -> None:
        await super().publish(event)
        if not isinstance(event, ResourceUpdated):
            return
        for connection, (session, uris) in list(self._legacy.items()):
            if event.uri not in uris:
                continue
            try:
                await session.send_resource_updated(event.uri)
            except Exception:  # the client went away: forget it
                logger.debug("dropping a resource subscriber", exc_info=True)
                self._legacy.pop(connection, None)

    async def on_subscribe(self, ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        """The ``resources/subscribe`` handler."""
        self._legacy.setdefault(self._connection_of(ctx.session), (ctx.session, set()))[1].add(str(params.uri))
        return EmptyResult()

    async def on_unsubscribe(self, ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        """The ``resources/unsubscribe`` handler."""
        connection = self._connection_of(ctx.session)
        entry = self._legacy.get(connection)
        if entry is not None:
            entry[1].discard(str(params.uri))
            if not entry[1]:
                del self._legacy[connection]
        return EmptyResult()


_EVENTS = {cls.__name__: cls for cls in (ToolsListChanged, PromptsListChanged, ResourcesListChanged, ResourceUpdated)}


def event_payload(event: ServerEvent, origin: str) -> str:
    """``event`` as JSON for a NOTIFY payload, tagged with the publishing process."""
    return json.dumps({"origin": origin, "type": type(event).__name__, "uri": getattr(event, "uri", None)})


def event_from_payload(payload: str) -> tuple[str, ServerEvent] | None:
    """(origin, event) of a payload made by :func:`event_payload`; ``None`` for anything else."""
    try:
        data = json.loads(payload)
        kind = _EVENTS[data["type"]]
        event = kind(uri=str(data["uri"])) if kind is ResourceUpdated else kind()
        return str(data["origin"]), event
    except (ValueError, KeyError, TypeError):
        return None
