"""Aggregation methods as pure functions: normalisation, votes, settlement, similarity, Bayesian fusion."""

from __future__ import annotations

import math

import pytest

from server.consensus.aggregation import (
    Ballot,
    ReliabilityEstimate,
    answer_key,
    bayesian,
    extract_choice,
    normalise,
    parse_confident_answer,
    similarity,
    vote,
    vote_is_settled,
)


def ballots(*keys: str, weights: list[float] | None = None) -> list[Ballot]:
    return [Ballot(i, f"p{i}", key, key.title(), (weights or [1.0] * len(keys))[i]) for i, key in enumerate(keys)]


@pytest.mark.parametrize(("text", "key"), [("  Paris. ", "paris"), ("PARIS", "paris"), ("paris\n", "paris"),
                                           ('"Paris"', "paris"), ("New   York!", "new york")])
def test_normalise(text: str, key: str) -> None:
    assert normalise(text) == key


def test_choice_extraction_from_longer_text() -> None:
    choices = ["A", "B", "approve", "reject"]
    assert extract_choice("The answer is B, because…", ["A", "B"]) == "B"
    assert extract_choice("I would approve this change.", choices) == "approve"
    assert extract_choice("Neither.", ["A", "B"]) is None
    assert extract_choice("b", ["A", "B"]) == "B"
    assert extract_choice("approve, not reject", ["reject", "approve"]) == "approve"  # the one named first


def test_answer_path_reads_a_json_field() -> None:
    assert answer_key('```json\n{"verdict": "Yes", "why": "…"}\n```', answer_path="verdict") == "yes"
    assert answer_key('{"result": {"items": [3, 4]}}', answer_path="result.items.1") == "4"
    assert answer_key("not json", answer_path="verdict") is None


def test_vote_counts_and_agreement() -> None:
    outcome = vote(ballots("paris", "paris", "lyon", "paris"))
    assert outcome.answer == "Paris" and outcome.agreement == 0.75 and not outcome.tie
    assert outcome.winners == [0, 1, 3]


def test_ties_are_reported() -> None:
    outcome = vote(ballots("a", "b", "a", "b"))
    assert outcome.tie and outcome.agreement == 0.5


def test_weighted_vote_lets_weight_beat_numbers() -> None:
    outcome = vote(ballots("x", "y", "y", weights=[3.0, 1.0, 1.0]))
    assert outcome.answer == "X" and outcome.agreement == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("keys", "outstanding", "threshold", "settled"),
    [
        (["a", "a", "a"], 2, 0.6, True),    # 3 of 5 at worst, cannot be overtaken
        (["a", "a"], 3, 0.6, False),        # 2 of 5 at worst: below the threshold
        (["a", "a", "b"], 2, 0.6, False),   # b + 2 could tie
        (["a", "a", "a", "a"], 1, 0.8, True),
        (["a", "a", "a"], 1, 0.8, False),   # 3 of 4 = 0.75 at worst
    ],
)
def test_vote_settlement(keys: list[str], outstanding: int, threshold: float, settled: bool) -> None:
    assert vote_is_settled(ballots(*keys), outstanding, threshold) is settled


def test_similarity_clusters_paraphrases_and_returns_the_medoid() -> None:
    texts = ["The capital of France is Paris.", "Paris is the capital of France.",
             "The capital city of France is Paris.", "Bananas are yellow fruit rich in potassium."]
    ballots_ = [Ballot(i, f"p{i}", t, t) for i, t in enumerate(texts)]
    outcome = similarity(ballots_, link_threshold=0.4)
    assert sorted(outcome.winners) == [0, 1, 2]
    assert outcome.agreement == 0.75
    assert outcome.answer in texts[:3]
    assert outcome.groups[1]["providers"] == ["p3"]


def test_bayesian_weights_confident_reliable_models_over_numbers() -> None:
    strong = Ballot(0, "expert", "x", "X", confidence=0.99, reliability=0.95)
    weak = [Ballot(i, f"weak{i}", "y", "Y", confidence=0.55, reliability=0.5) for i in (1, 2)]
    outcome = bayesian([strong, *weak])
    assert outcome.answer == "X"
    # Independent check of the documented formula.
    def p(c: float, r: float) -> float:
        logit = lambda v: math.log(v / (1 - v))  # noqa: E731
        return 1 / (1 + math.exp(-(logit(c) + logit(r)) / 2))
    px, py = p(0.99, 0.95), p(0.55, 0.5)
    score_x = math.log(px) + 2 * math.log(1 - py)
    score_y = math.log(1 - px) + 2 * math.log(py)
    expected = 1 / (1 + math.exp(score_y - score_x))
    assert outcome.agreement == pytest.approx(expected, rel=1e-4)


def test_bayesian_agreement_grows_with_agreement() -> None:
    two = bayesian([Ballot(i, f"p{i}", "a", "A", confidence=0.8, reliability=0.8) for i in range(2)]
                   + [Ballot(2, "p2", "b", "B", confidence=0.8, reliability=0.8)])
    four = bayesian([Ballot(i, f"p{i}", "a", "A", confidence=0.8, reliability=0.8) for i in range(4)]
                    + [Ballot(4, "p4", "b", "B", confidence=0.8, reliability=0.8)])
    assert 0.5 < two.agreement < four.agreement < 1


def test_confident_answer_parsing() -> None:
    assert parse_confident_answer('{"answer": "Paris", "confidence": 0.9}') == ("Paris", 0.9)
    assert parse_confident_answer('{"answer": "Paris", "confidence": 7}') == ("Paris", None)
    assert parse_confident_answer("Paris") == ("Paris", None)


def test_reliability_estimate_moves_with_agreement() -> None:
    estimate = ReliabilityEstimate()
    assert estimate.reliability("new") == pytest.approx(2 / 3)
    for _ in range(8):
        estimate.update("good", True)
        estimate.update("bad", False)
    assert estimate.reliability("good") > 0.9 > 0.3 > estimate.reliability("bad")
