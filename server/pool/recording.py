"""The recording wrapper: every attempt of a pool member becomes a call record, off the hot path.

A :class:`RecordingProvider` is built per call around a :class:`~server.pool.member.PoolMember` and records each
attempt with the call's labels (:class:`~server.pool.call.Call`): ``ok`` with usage and cost, ``error`` with its
error class, or ``cancelled`` — early stop, a deadline, the client going away — which never counts toward error
rates, breakers or incidents. A member that refused the call (:class:`~server.errors.ProviderUnavailable`) was not
called, so nothing is recorded. Recording is a queue put (:meth:`server.store.CallStore.record_call`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import anyio

from server.errors import DeadlineExceeded, ProviderError, ProviderUnavailable
from server.pool.call import Call
from server.pool.member import PoolMember
from server.pool.providers import Completion, CompletionRequest, Provider
from server.store import CallRecord, CallStore


class RecordingProvider:
    """A :class:`~server.pool.member.PoolMember` (or a provider outside the pool: the client's own model) whose
    attempts are recorded for ``call``.

    Args:
        member: the member (or provider) to call; recorded under its ``name`` and ``model``.
        store: where records go.
        call: the call's labels (id, tool, A/B bucket, workflow) and attempt counter.
        clock: wall clock in Unix seconds (record times); timer: monotonic seconds (latencies).
    """

    def __init__(self, member: PoolMember | Provider, store: CallStore, call: Call, *, clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.member = member
        self.name = member.name
        self.model = member.model
        self._store = store
        self._call = call
        self._clock = clock
        self._timer = timer

    async def complete(self, request: CompletionRequest) -> Completion:
        """The member's answer (errors as the member raises them), recorded."""
        ts, started = self._clock(), self._timer()
        try:
            completion = await self.member.complete(request)
        except ProviderUnavailable:
            raise
        except ProviderError as error:
            latency_ms = error.latency_ms if error.latency_ms is not None else (self._timer() - started) * 1000
            status = "cancelled" if isinstance(error, DeadlineExceeded) else "error"
            self._record(ts, latency_ms, status, error.error_class)
            raise
        except anyio.get_cancelled_exc_class():
            self._record(ts, (self._timer() - started) * 1000, "cancelled", "cancelled")
            raise
        except Exception:
            self._record(ts, (self._timer() - started) * 1000, "error", "internal_error")
            raise
        self._record(ts, completion.latency_ms, "ok", None, completion)
        return completion

    def _record(self, ts: float, latency_ms: float, status: Literal["ok", "error", "cancelled"],
                error_class: str | None, completion: Completion | None = None) -> None:
        call = self._call
        usage = completion.usage if completion is not None else None
        self._store.record_call(CallRecord(
            ts=ts, call_id=call.call_id, tool=call.tool, provider=self.name, model=self.model, status=status,
            latency_ms=latency_ms, error_class=error_class,
            input_tokens=usage.input_tokens if usage else 0, output_tokens=usage.output_tokens if usage else 0,
            cost_usd=completion.cost_usd if completion is not None else 0.0, attempt=call.next_attempt(),
            ab_bucket=call.ab_bucket, workflow=call.workflow,
        ))

    async def aclose(self) -> None:
        """Nothing to close: the member belongs to the pool, which closes it."""
