"""Routing strategies and A/B assignment, as pure functions of the candidates' state."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from server.config import Experiment, ProviderConfig, RoutingConfig
from server.pool.routing import Router, assign_bucket, bucket_fraction


@dataclass
class Candidate:
    config: ProviderConfig
    ewma_latency_ms: float | None = None
    in_flight: int = 0


def candidate(name: str, priority: int = 10, weight: float = 1.0, **extra) -> Candidate:
    fields = {k: extra.pop(k) for k in ("input_cost_per_mtok", "output_cost_per_mtok") if k in extra}
    config = ProviderConfig(name=name, kind="openai", model=f"{name}-m", priority=priority, weight=weight, **fields)
    return Candidate(config, **extra)


def names(ordered: list) -> list[str]:
    return [c.config.name for c in ordered]


def first_choices(router: Router, candidates: list, strategy: str, trials: int = 4000) -> Counter:
    return Counter(router.order(candidates, strategy)[0].config.name for _ in range(trials))


def test_priority_puts_lower_numbers_first_and_splits_ties_by_weight() -> None:
    router = Router(RoutingConfig(), random.Random(1))
    pool = [candidate("c", priority=3), candidate("a1", priority=1, weight=3), candidate("a2", priority=1, weight=1)]
    ordered = router.order(pool, "priority")
    assert names(ordered)[2] == "c"
    share = first_choices(router, pool, "priority")["a1"] / 4000
    assert share == pytest.approx(0.75, abs=0.03)


def test_weighted_first_choice_follows_weights() -> None:
    router = Router(RoutingConfig(), random.Random(2))
    pool = [candidate("a", weight=1), candidate("b", weight=2), candidate("c", weight=5)]
    counts = first_choices(router, pool, "weighted", 8000)
    assert counts["c"] / 8000 == pytest.approx(5 / 8, abs=0.03)
    assert counts["a"] / 8000 == pytest.approx(1 / 8, abs=0.02)


def test_round_robin_rotates_through_all() -> None:
    router = Router(RoutingConfig(), random.Random(3))
    pool = [candidate("a", 1), candidate("b", 2), candidate("c", 3)]
    firsts = [names(router.order(pool, "round_robin"))[0] for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]


def test_least_latency_shares_the_band_and_puts_the_slow_last() -> None:
    router = Router(RoutingConfig(latency_tolerance=0.25), random.Random(4))
    pool = [candidate("fast", ewma_latency_ms=100), candidate("near", ewma_latency_ms=120),
            candidate("slow", ewma_latency_ms=400)]
    counts = first_choices(router, pool, "least_latency")
    assert counts["slow"] == 0
    assert counts["fast"] > 1500 and counts["near"] > 1500  # near-best providers share the load
    assert all(names(router.order(pool, "least_latency"))[-1] == "slow" for _ in range(50))


def test_least_latency_measures_unmeasured_providers_first() -> None:
    router = Router(RoutingConfig(), random.Random(5))
    pool = [candidate("known", ewma_latency_ms=5), candidate("new")]
    assert names(router.order(pool, "least_latency"))[0] == "new"


def test_least_cost_orders_by_estimated_price_of_the_request() -> None:
    router = Router(RoutingConfig(), random.Random(6))
    pool = [candidate("pricey", input_cost_per_mtok=10, output_cost_per_mtok=30),
            candidate("cheap-in", input_cost_per_mtok=0.1, output_cost_per_mtok=20),
            candidate("cheap-out", input_cost_per_mtok=5, output_cost_per_mtok=1)]
    # A long prompt with a short answer favours cheap input; a short prompt with a long answer cheap output.
    assert names(router.order(pool, "least_cost", input_tokens=100_000, output_tokens=10))[0] == "cheap-in"
    assert names(router.order(pool, "least_cost", input_tokens=10, output_tokens=10_000))[0] == "cheap-out"
    assert names(router.order(pool, "least_cost", input_tokens=10, output_tokens=10_000))[-1] == "pricey"


def test_least_busy_prefers_fewest_in_flight() -> None:
    router = Router(RoutingConfig(), random.Random(7))
    pool = [candidate("busy", in_flight=7), candidate("idle", in_flight=0), candidate("some", in_flight=2)]
    assert names(router.order(pool, "least_busy")) == ["idle", "some", "busy"]


def test_ab_assignment_is_sticky_and_splits_as_configured() -> None:
    experiment = Experiment(name="new-model", percentage=30, variant=("b",), control=("a",))
    buckets = [assign_bucket([experiment], f"user-{i}") for i in range(10_000)]
    share = sum(bucket[0] == "new-model:variant" for bucket in buckets) / 10_000
    assert share == pytest.approx(0.30, abs=0.015)  # ~3.3 standard deviations of a binomial(10 000, 0.3)
    assert all(assign_bucket([experiment], f"user-{i}") == buckets[i] for i in range(0, 10_000, 97))
    variant = next(b for b in buckets if b[0].endswith("variant"))
    assert variant[1] == ("b",)


def test_bucket_depends_on_the_experiment_name_too() -> None:
    same_user = [bucket_fraction(f"exp-{i}", "alice") for i in range(50)]
    assert len({round(x, 6) for x in same_user}) == 50


def test_no_user_or_no_experiment_means_no_bucket() -> None:
    experiment = Experiment(name="e", percentage=50, variant=("b",))
    assert assign_bucket([experiment], None) is None
    assert assign_bucket([], "alice") is None
