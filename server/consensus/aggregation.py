"""Aggregation methods for consensus: normalisation, (weighted) vote, lexical similarity clustering, Bayesian
fusion. Pure functions of the answers; the fan-out lives in :mod:`server.consensus.service`.

Sources:
    * Self-consistency (majority over samples): Wang et al., "Self-Consistency Improves Chain of Thought
      Reasoning in Language Models", ICLR 2023.
    * Weighted majority with log-odds weights: Nitzan & Paroush, "Optimal decision rules in uncertain
      dichotomous choice situations", International Economic Review 23(2), 1982.
    * Reliability without ground truth: Dawid & Skene, "Maximum Likelihood Estimation of Observer
      Error-Rates Using the EM Algorithm", Applied Statistics 28(1), 1979 (the one-coin simplification:
      one accuracy per observer).
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from server.pool.text import strip_code_fence

_PUNCTUATION = string.punctuation + "“”‘’«»…"
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Ballot:
    """One usable answer: who gave it, its normalised form, its weight and (Bayesian) confidence."""

    index: int
    provider: str
    key: str
    text: str
    weight: float = 1.0
    confidence: float | None = None
    reliability: float | None = None


@dataclass(slots=True)
class Outcome:
    """What an aggregation decided.

    Attributes:
        answer: the winning answer (its original text), ``None`` when nothing could be decided.
        agreement: in [0, 1]; how it is computed is in ``agreement_basis``.
        winners: indices of the ballots in the winning group.
        tie: the top groups carry equal weight.
        groups: per distinct answer (vote, Bayesian) or cluster (similarity): answer, weight, ballots.
    """

    answer: str | None
    agreement: float
    agreement_basis: str
    winners: list[int]
    tie: bool = False
    groups: list[dict] = field(default_factory=list)


# -- normalisation ----------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Case-folded, whitespace-collapsed, surrounding punctuation stripped (``" Paris. "`` → ``"paris"``)."""
    return " ".join(text.casefold().split()).strip(_PUNCTUATION + " ")


def extract_choice(text: str, choices: Sequence[str]) -> str | None:
    """The choice a free-text answer names: an exact (normalised) match, else the one named earliest as a
    whole word or phrase; ``None`` when it names none."""
    normalised = normalise(text)
    by_key = {normalise(choice): choice for choice in choices}
    if normalised in by_key:
        return by_key[normalised]
    found = []
    for key, choice in by_key.items():
        match = re.search(rf"(?<![a-z0-9]){re.escape(key)}(?![a-z0-9])", normalised)
        if match:
            found.append((match.start(), -len(key), choice))
    return min(found)[2] if found else None


def json_path(text: str, path: str) -> object | None:
    """The value at a dotted ``path`` (``"verdict"``, ``"result.items.0"``) in a JSON reply, else ``None``."""
    try:
        value: object = json.loads(strip_code_fence(text))
    except ValueError:
        return None
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def answer_label(text: str, *, choices: Sequence[str] = (), answer_path: str | None = None) -> str | None:
    """What an answer says, as reported: the choice it names, the JSON field's value, or the text itself;
    ``None`` when the answer is unusable (names no choice, lacks the field)."""
    if answer_path:
        value = json_path(text, answer_path)
        if value is None:
            return None
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if choices:
        return extract_choice(text, choices)
    return text.strip() or None


def answer_key(text: str, *, choices: Sequence[str] = (), answer_path: str | None = None) -> str | None:
    """The form answers are compared in (see :func:`answer_label`, then :func:`normalise`)."""
    label = answer_label(text, choices=choices, answer_path=answer_path)
    return normalise(label) or None if label is not None else None


# -- vote -------------------------------------------------------------------------------------------------


def tally(ballots: Sequence[Ballot]) -> list[dict]:
    """Groups of equal keys, heaviest first (ties keep first-seen order)."""
    groups: dict[str, dict] = {}
    for ballot in ballots:
        group = groups.setdefault(ballot.key, {"answer": ballot.text, "key": ballot.key, "weight": 0.0,
                                               "count": 0, "ballots": [], "providers": []})
        group["weight"] += ballot.weight
        group["count"] += 1
        group["ballots"].append(ballot.index)
        group["providers"].append(ballot.provider)
    return sorted(groups.values(), key=lambda g: -g["weight"])


def vote(ballots: Sequence[Ballot]) -> Outcome:
    """Plurality by weight (weights all 1 for a plain vote). Agreement: winning weight / total weight."""
    groups = tally(ballots)
    total = sum(g["weight"] for g in groups)
    if not groups or total <= 0:
        return Outcome(None, 0.0, "no usable answers", [])
    top = groups[0]
    tie = len(groups) > 1 and math.isclose(groups[1]["weight"], top["weight"])
    return Outcome(top["answer"], top["weight"] / total, "weight of the leading answer / weight of all usable "
                   "answers", list(top["ballots"]), tie, groups)


def vote_is_settled(ballots: Sequence[Ballot], outstanding_weight: float, threshold: float) -> bool:
    """True when no outstanding answer can change a vote's outcome: the leader already meets ``threshold`` even
    if every outstanding answer disagrees, and cannot be overtaken even if they all agree on a rival."""
    groups = tally(ballots)
    if not groups:
        return False
    total = sum(g["weight"] for g in groups) + outstanding_weight
    leader = groups[0]["weight"]
    runner_up = groups[1]["weight"] if len(groups) > 1 else 0.0
    return leader / total >= threshold and leader > runner_up + outstanding_weight


# -- similarity -------------------------------------------------------------------------------------------


def _features(text: str) -> Counter:
    words = _WORD.findall(text.casefold())
    return Counter(words) + Counter(f"{a} {b}" for a, b in zip(words, words[1:]))


def cosine(a: Counter, b: Counter) -> float:
    """Cosine similarity of two sparse count vectors, in [0, 1]."""
    if not a or not b:
        return 0.0
    dot = sum(count * b[term] for term, count in a.items() if term in b)
    return dot / math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))


def similarity_matrix(texts: Sequence[str]) -> list[list[float]]:
    """Pairwise lexical similarity: cosine over word unigram + bigram counts."""
    features = [_features(text) for text in texts]
    return [[1.0 if i == j else cosine(features[i], features[j]) for j in range(len(texts))]
            for i in range(len(texts))]


def similarity(ballots: Sequence[Ballot], link_threshold: float = 0.6) -> Outcome:
    """Cluster answers whose similarity is at least ``link_threshold`` (single linkage, connected components);
    the heaviest cluster wins and its medoid (highest summed similarity to its members) is the answer.
    Agreement: the winning cluster's weight / the weight of all answers."""
    if not ballots:
        return Outcome(None, 0.0, "no usable answers", [])
    matrix = similarity_matrix([b.text for b in ballots])
    parent = list(range(len(ballots)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(ballots)):
        for j in range(i + 1, len(ballots)):
            if matrix[i][j] >= link_threshold:
                parent[root(j)] = root(i)
    members: dict[int, list[int]] = {}
    for i in range(len(ballots)):
        members.setdefault(root(i), []).append(i)
    clusters = []
    for group in members.values():
        medoid = max(group, key=lambda i: (sum(matrix[i][j] for j in group), -i))
        clusters.append({"answer": ballots[medoid].text, "medoid": ballots[medoid].index,
                         "weight": sum(ballots[i].weight for i in group),
                         "ballots": [ballots[i].index for i in group],
                         "providers": [ballots[i].provider for i in group],
                         "cohesion": round(min((matrix[i][j] for i in group for j in group), default=1.0), 4)})
    clusters.sort(key=lambda c: -c["weight"])
    total = sum(b.weight for b in ballots)
    top = clusters[0]
    tie = len(clusters) > 1 and math.isclose(clusters[1]["weight"], top["weight"])
    return Outcome(top["answer"], top["weight"] / total,
                   f"weight of the largest cluster (answers linked at lexical similarity >= {link_threshold}) "
                   "/ weight of all answers", list(top["ballots"]), tie, clusters)


# -- Bayesian fusion --------------------------------------------------------------------------------------


def _logit(p: float) -> float:
    p = min(max(p, 0.01), 0.99)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def bayesian(ballots: Sequence[Ballot], default_confidence: float = 0.7, default_reliability: float = 0.7) -> Outcome:
    """Posterior over the distinct answers, fused in log-odds.

    Each model i is correct with probability ``p_i = sigmoid((logit(confidence_i) + logit(reliability_i)) / 2)``
    (its stated confidence and its track record, averaged in log-odds, both clipped to [0.01, 0.99]); a wrong
    model spreads its vote evenly over the other K − 1 candidates (K distinct answers, at least 2). With a
    uniform prior, ``log P(a) = Σ_i [log p_i if i answered a else log((1 − p_i)/(K − 1))] + const`` — the
    one-coin Dawid–Skene observer model, whose decision rule weights votes by ``log(p_i (K−1)/(1 − p_i))``
    (Nitzan & Paroush 1982). Agreement: the winner's posterior probability.
    """
    groups = tally(ballots)
    if not groups:
        return Outcome(None, 0.0, "no usable answers", [])
    k = max(2, len(groups))
    scores = []
    for group in groups:
        score = 0.0
        for ballot in ballots:
            confidence = ballot.confidence if ballot.confidence is not None else default_confidence
            reliability = ballot.reliability if ballot.reliability is not None else default_reliability
            p = _sigmoid((_logit(confidence) + _logit(reliability)) / 2)
            score += math.log(p) if ballot.key == group["key"] else math.log((1 - p) / (k - 1))
        scores.append(score)
    peak = max(scores)
    posteriors = [math.exp(s - peak) for s in scores]
    norm = sum(posteriors)
    for group, posterior in zip(groups, posteriors):
        group["posterior"] = round(posterior / norm, 6)
    groups.sort(key=lambda g: -g["posterior"])
    top = groups[0]
    tie = len(groups) > 1 and math.isclose(groups[1]["posterior"], top["posterior"])
    return Outcome(top["answer"], top["posterior"], "posterior probability of the winning answer (log-odds "
                   "fusion of each model's confidence and reliability)", list(top["ballots"]), tie, groups)


def parse_confident_answer(text: str) -> tuple[str, float | None]:
    """(answer, confidence) from a ``{"answer": …, "confidence": 0..1}`` reply; else (text, None)."""
    try:
        value = json.loads(strip_code_fence(text))
    except ValueError:
        return text, None
    if isinstance(value, dict) and "answer" in value:
        answer = value["answer"] if isinstance(value["answer"], str) else json.dumps(value["answer"])
        confidence = value.get("confidence")
        if isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and 0 <= confidence <= 1:
            return answer, float(confidence)
        return answer, None
    return text, None


class ReliabilityEstimate:
    """How often each provider agreed with past consensus outcomes: a Beta(2, 1)-smoothed rate, a one-coin
    Dawid–Skene-style estimate that needs no ground truth (the consensus stands in for it)."""

    def __init__(self, prior_agree: float = 2.0, prior_disagree: float = 1.0) -> None:
        self.prior = (prior_agree, prior_disagree)
        self.counts: dict[str, list[int]] = {}

    def update(self, provider: str, agreed: bool) -> None:
        counts = self.counts.setdefault(provider, [0, 0])
        counts[0 if agreed else 1] += 1

    def reliability(self, provider: str) -> float:
        agreed, disagreed = self.counts.get(provider, [0, 0])
        a, b = self.prior
        return (agreed + a) / (agreed + disagreed + a + b)
