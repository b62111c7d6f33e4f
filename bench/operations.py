"""Operations figures: recording overhead, ingestion rate, and a 24 h summary over 1,000,000 recorded calls.

    python bench/operations.py [--calls 100000] [--records 1000000] [--summaries 20]

1. Recording overhead: ``ProviderPool.complete`` with an instant in-process provider, 100,000 calls with
   recording into the SQLite store and 100,000 with a store that drops records, in the same run, interleaved in
   20 rounds of 5,000 (with, without, with …) so machine drift hits both alike; medians over rounds. The
   "with" side includes waiting for its records to be written (the store thread competes for the GIL), so the
   figure is the whole cost of recording, not just the queue put. Target: at most 50 µs per call.
2. Ingestion: 1,000,000 records (4 providers, 2 tools, spread over 24 h) queued into a fresh SQLite store as
   fast as the caller can, timed until all are stored (raw rows plus per-minute aggregates). Target: at least
   20,000 calls/s.
3. Summary: ``monitor_operations``'s core over that database, window 24h grouped by provider (histogram path,
   with series and the previous window), repeated; p50/p95 wall time. Baseline, same run: the same figures
   computed from the raw records (exact path forced), which is what the summary did before per-minute
   aggregates. Target: p95 under 200 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.config import Config, OperationsConfig  # noqa: E402
from server.operations.summary import operations_summary  # noqa: E402
from server.pool.pool import ProviderPool  # noqa: E402
from server.pool.providers import Completion, CompletionRequest, Message, Usage  # noqa: E402
from server.store import CallRecord  # noqa: E402
from server.store.sqlite import SQLiteStore  # noqa: E402

NOW = 1_800_000_000.0
PROVIDERS = ("openai-mini", "openai-big", "claude-haiku", "claude-sonnet")
REQUEST = CompletionRequest(messages=(Message("user", "hello"),))


class InstantProvider:
    def __init__(self, name: str) -> None:
        self.name = name
        self._completion = Completion(text="ok", model="m", usage=Usage(12, 7))

    async def complete(self, request: CompletionRequest) -> Completion:
        return self._completion

    async def aclose(self) -> None:
        pass


class DroppingStore:
    """Records nothing: the "without recording" side."""

    def record_call(self, record: CallRecord) -> None:
        pass


def pool_for(store: object) -> ProviderPool:
    config = Config.model_validate({"providers": [
        {"name": "p", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
         "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.6}]})
    return ProviderPool([(config.providers[0], InstantProvider("p"))], store, config=config)  # type: ignore[arg-type]


async def recording_overhead(calls: int, rounds: int, folder: Path) -> tuple[float, float, float]:
    """Per-call seconds: median with recording, median without, median of the paired per-round differences."""
    store = SQLiteStore(folder / "overhead.db")
    recording, dropping = pool_for(store.calls), pool_for(DroppingStore())
    per_round = calls // rounds
    with_s: list[float] = []
    without_s: list[float] = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(per_round):
                await recording.complete(REQUEST)
            await store.calls.flush()
            with_s.append((time.perf_counter() - started) / per_round)
            started = time.perf_counter()
            for _ in range(per_round):
                await dropping.complete(REQUEST)
            without_s.append((time.perf_counter() - started) / per_round)
        assert await store.calls.count_calls() == per_round * rounds
    finally:
        await store.aclose()
    added = statistics.median(w - wo for w, wo in zip(with_s, without_s, strict=True))
    return statistics.median(with_s), statistics.median(without_s), added


def records(count: int, seed: int = 7) -> list[CallRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        provider = PROVIDERS[i % len(PROVIDERS)]
        latency_ms = rng.lognormvariate(6.0 + 0.3 * (i % len(PROVIDERS)), 0.6)
        out.append(CallRecord(ts=NOW - 86400 + 86400 * i / count, call_id=f"{i:x}",
                              tool="consensus" if i % 5 == 0 else "orchestrate", provider=provider,
                              model=provider + "-model", status="error" if rng.random() < 0.02 else "ok",
                              latency_ms=latency_ms, input_tokens=rng.randint(50, 2000),
                              output_tokens=rng.randint(10, 800), cost_usd=rng.random() * 1e-3))
    return out


async def ingestion(store: SQLiteStore, batch: list[CallRecord]) -> float:
    """Calls per second from the first queued record to the last one stored."""
    started = time.perf_counter()
    for record in batch:
        store.calls.record_call(record)
    await store.calls.flush()
    return len(batch) / (time.perf_counter() - started)


async def summaries(store: SQLiteStore, repeat: int, *, exact: bool) -> list[float]:
    settings = OperationsConfig(exact_window_s=7 * 86400) if exact else OperationsConfig()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        summary = await operations_summary(store.calls, window="24h", settings=settings, clock=lambda: NOW)
        times.append(time.perf_counter() - started)
    assert summary.totals.calls > 0
    return times


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


async def main(calls: int, total_records: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        with_s, without_s, added_s = await recording_overhead(calls, 20, Path(folder))
        print(f"recording overhead ({calls:,} pool calls each side in 20 interleaved rounds, SQLite store incl. "
              "flush; medians over rounds)")
        print(f"  without recording  {without_s * 1e6:8.1f} µs/call")
        print(f"  with recording     {with_s * 1e6:8.1f} µs/call")
        print(f"  added              {added_s * 1e6:8.1f} µs/call   (target ≤ 50 µs; median of paired rounds)")
        batch = records(total_records)
        store = SQLiteStore(Path(folder) / "ops.db")
        try:
            rate = await ingestion(store, batch)
            print(f"\ningestion: {total_records:,} records over 24 h → {rate:,.0f} calls/s   (target ≥ 20,000)")
            ours = await summaries(store, repeat, exact=False)
            raw = await summaries(store, max(3, repeat // 5), exact=True)
        finally:
            await store.aclose()
        print(f"\n24 h summary by provider over {total_records:,} calls (series + previous window)")
        print(f"  {'':28} {'p50 ms':>9} {'p95 ms':>9}")
        print(f"  {'ours (hourly aggregates)':28} {p(ours, 50) * 1000:9.1f} {p(ours, 95) * 1000:9.1f}   "
              "(target p95 < 200 ms)")
        print(f"  {'baseline (raw records)':28} {p(raw, 50) * 1000:9.1f} {p(raw, 95) * 1000:9.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--summaries", type=int, default=20)
    args = parser.parse_args()
    anyio.run(main, args.calls, args.records, args.summaries)
