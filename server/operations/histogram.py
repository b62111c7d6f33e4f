"""Latency histograms with logarithmic buckets and a bounded relative error.

The bucket scheme is DDSketch's (Masson, Rim & Lee, "DDSketch: A Fast and Fully-Mergeable Quantile Sketch with
Relative-Error Guarantees", VLDB 2019): with ``γ = (1 + α) / (1 − α)``, bucket ``i`` holds the values in
``(γ^(i−1), γ^i]`` and stands for ``2γ^i / (γ + 1)``, which is within a factor ``α`` of every value in the
bucket. Here ``α = RELATIVE_ERROR = 0.02``: a quantile read from a histogram is within 2 % of the exact
quantile of the recorded values (for the interpolated quantile too, since it mixes two order statistics that
are each within 2 %). Values at or below ``ZERO_MS`` (1 µs, cached answers report 0) share one bucket that
stands for 0.

Histograms merge by adding counts, so per-minute histograms add up to any longer window exactly.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping

RELATIVE_ERROR = 0.02
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(GAMMA)
ZERO_MS = 0.001
ZERO_INDEX = -(2**31)  # the bucket of values <= ZERO_MS


def bucket_index(value_ms: float) -> int:
    """The bucket a latency (milliseconds) falls in."""
    if value_ms <= ZERO_MS:
        return ZERO_INDEX
    return math.ceil(math.log(value_ms) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    """The value a bucket stands for (within ``RELATIVE_ERROR`` of every value in it)."""
    if index == ZERO_INDEX:
        return 0.0
    return 2 * GAMMA**index / (GAMMA + 1)


def add_value(counts: dict[int, int], value_ms: float) -> None:
    """Count one latency into ``counts`` (bucket index -> count)."""
    index = bucket_index(value_ms)
    counts[index] = counts.get(index, 0) + 1


def merge(into: dict[int, int], other: Mapping[int, int]) -> None:
    """Add ``other``'s counts to ``into``."""
    get = into.get
    for index, count in other.items():
        into[index] = get(index, 0) + count


def encode(counts: Mapping[int, int]) -> bytes:
    """Bucket counts as bytes (pairs of signed 64-bit index, count), for storage."""
    flat = array("q")
    for index, count in counts.items():
        flat.append(index)
        flat.append(count)
    return flat.tobytes()


def decode(data: bytes | None) -> dict[int, int]:
    """The inverse of :func:`encode`."""
    if not data:
        return {}
    flat = array("q")
    flat.frombytes(data)
    return dict(zip(flat[::2], flat[1::2], strict=True))


def quantiles(counts: Mapping[int, int], qs: Iterable[float]) -> list[float | None]:
    """The q-th percentiles (0–100) of the counted values, linear interpolation between closest ranks (the same
    definition as :func:`server.operations.summary.percentile`), each within ``RELATIVE_ERROR`` of the exact value.

    Returns ``None`` for each q when nothing is counted.
    """
    qs = list(qs)
    total = sum(counts.values())
    if total == 0:
        return [None] * len(qs)
    ordered = sorted(counts.items())
    wanted: list[tuple[int, int, float, int]] = []  # (low rank, high rank, fraction, position in qs)
    for position, q in enumerate(qs):
        exact = (total - 1) * q / 100
        low = math.floor(exact)
        wanted.append((low, min(low + 1, total - 1), exact - low, position))
    ranks = sorted({rank for low, high, _, _ in wanted for rank in (low, high)})
    values: dict[int, float] = {}
    seen = 0
    cursor = 0
    for index, count in ordered:
        seen += count
        while cursor < len(ranks) and ranks[cursor] < seen:
            values[ranks[cursor]] = bucket_value(index)
            cursor += 1
        if cursor == len(ranks):
            break
    out: list[float | None] = [None] * len(qs)
    for low, high, fraction, position in wanted:
        out[position] = values[low] + (values[high] - values[low]) * fraction
    return out
