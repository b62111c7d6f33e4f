"""Routing strategies: the order in which a call's candidate providers are tried, and A/B bucket assignment.

Every strategy returns a full ordering (the first is tried first; the rest are fallbacks), so fallback is
the same mechanism whatever the strategy. Random choices use an injected ``random.Random`` so tests can
fix them.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Sequence
from typing import Protocol

from server.config import Experiment, ProviderConfig, RoutingConfig, Strategy


class Routable(Protocol):
    """What a strategy needs to know of a candidate."""

    config: ProviderConfig

    @property
    def ewma_latency_ms(self) -> float | None: ...

    @property
    def in_flight(self) -> int: ...


def weighted_shuffle(items: Sequence[Routable], rng: random.Random) -> list[Routable]:
    """Weighted random order without replacement (Efraimidis & Spirakis 2006: key = u^(1/w), descending)."""
    keyed = [(rng.random() ** (1.0 / item.config.weight), index) for index, item in enumerate(items)]
    return [items[index] for _, index in sorted(keyed, reverse=True)]


def estimated_cost_usd(config: ProviderConfig, input_tokens: int, output_tokens: int) -> float:
    return config.cost_usd(input_tokens, output_tokens)


class Router:
    """Orders candidates by a strategy.

    Args:
        routing: the ``[routing]`` settings (tolerance band for least_latency).
        rng: randomness for ties and weighted choices.
    """

    def __init__(self, routing: RoutingConfig, rng: random.Random | None = None) -> None:
        self.routing = routing
        self.rng = rng or random.Random()
        self._turn = itertools.count()

    def order(
        self, candidates: Sequence[Routable], strategy: Strategy, *, input_tokens: int = 0, output_tokens: int = 0
    ) -> list[Routable]:
        """All ``candidates`` in the order a call should try them under ``strategy``."""
        if len(candidates) <= 1:
            return list(candidates)
        if strategy == "weighted":
            return weighted_shuffle(candidates, self.rng)
        if strategy == "round_robin":
            ordered = sorted(candidates, key=lambda c: (c.config.priority, c.config.name))
            shift = next(self._turn) % len(ordered)
            return ordered[shift:] + ordered[:shift]
        if strategy == "least_latency":
            return self._least_latency(candidates)
        if strategy == "least_cost":
            return self._by_tiers(candidates, lambda c: estimated_cost_usd(c.config, input_tokens, output_tokens))
        if strategy == "least_busy":
            return self._by_tiers(candidates, lambda c: c.in_flight)
        return self._by_tiers(candidates, lambda c: c.config.priority)

    def _by_tiers(self, candidates: Sequence[Routable], key) -> list[Routable]:
        """Ascending ``key``; candidates with equal keys in weighted random order (ties share the load)."""
        ordered: list[Routable] = []
        for _, tier in itertools.groupby(sorted(candidates, key=key), key=key):
            ordered.extend(weighted_shuffle(list(tier), self.rng))
        return ordered

    def _least_latency(self, candidates: Sequence[Routable]) -> list[Routable]:
        """Fastest EWMA first; providers within ``latency_tolerance`` of the best share the load.

        A provider with no latency yet is treated as fastest, so every provider gets measured.
        """
        unmeasured = [c for c in candidates if c.ewma_latency_ms is None]
        measured = sorted((c for c in candidates if c.ewma_latency_ms is not None), key=lambda c: c.ewma_latency_ms)
        if not measured:
            return weighted_shuffle(unmeasured, self.rng)
        limit = measured[0].ewma_latency_ms * (1 + self.routing.latency_tolerance)
        band = [c for c in measured if c.ewma_latency_ms <= limit]
        rest = [c for c in measured if c.ewma_latency_ms > limit]
        return weighted_shuffle(unmeasured, self.rng) + weighted_shuffle(band, self.rng) + rest


def bucket_fraction(experiment: str, key: str) -> float:
    """A stable number in [0, 1) for (experiment, key): SHA-256 of both, first 8 bytes."""
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_bucket(experiments: Sequence[Experiment], user_id: str | None) -> tuple[str, tuple[str, ...]] | None:
    """The first experiment's bucket for ``user_id``: (``"name:variant"`` or ``"name:control"``, providers).

    Returns ``None`` without a ``user_id`` or experiments. ``providers`` is empty for a control bucket that
    uses the whole pool.
    """
    if not user_id or not experiments:
        return None
    experiment = experiments[0]
    if bucket_fraction(experiment.name, user_id) * 100 < experiment.percentage:
        return f"{experiment.name}:variant", experiment.variant
    return f"{experiment.name}:control", experiment.control
