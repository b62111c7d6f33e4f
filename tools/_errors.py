"""How errors reach a client, in exactly two ways: a :class:`server.errors.OrchestrationError` (the root of every
domain error) as a tool error with its message, written for the caller; anything else — a bug — as
``internal error (ref <id>)``, with the traceback logged under the same ref for whoever runs the server.
"""

import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from server.errors import OrchestrationError

logger = logging.getLogger(__name__)


@contextmanager
def core_errors() -> Iterator[None]:
    """Turn the core's errors into ``ToolError`` (the only kind whose message reaches the model): a domain error
    (:class:`~server.errors.OrchestrationError`) with its message, anything else as :func:`internal_error`."""
    try:
        yield
    except ToolError:
        raise
    except OrchestrationError as exc:
        raise ToolError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - a bug: the client gets a reference, the log the traceback
        raise internal_error(exc) from exc


def internal_error(exc: BaseException) -> ToolError:
    """Log ``exc`` with its traceback under a new reference, and return the tool error the client gets:
    ``internal error (ref <id>)`` (nothing of the exception's text, which was not written for a caller)."""
    ref = uuid.uuid4().hex[:12]
    logger.error("internal error (ref %s): %s", ref, type(exc).__name__, exc_info=exc)
    return ToolError(f"internal error (ref {ref}): the server logged the details under this reference")


def guarded(body: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    """``body`` (a tool function) run inside :func:`core_errors`."""
    if is_async:
        @functools.wraps(body)
        async def call_async(**kwargs: Any) -> Any:
            with core_errors():
                return await body(**kwargs)
        return call_async

    @functools.wraps(body)
    def call(**kwargs: Any) -> Any:
        with core_errors():
            return body(**kwargs)
    return call
