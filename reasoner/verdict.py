"""What the judge decides, and the one rule that mixes its vote with the retriever's (pure maths).

The combination, for [none, candidate 1, …, candidate k]:
1. the retriever's own opinion: softmax over [s_none/T, cos_1/T, …, cos_k/T] with s_none =
   retriever_none_similarity (the cosine similarity at which "none" and a candidate tie);
2. combined = w · P_judge + (1 - w) · P_retriever; the argmax wins (the first on ties); the verdict
   escalates when the argmax is "none" or its combined probability is below `threshold`.
`combine` decides one ticket; `mix_matrix`/`decide_matrix` decide many at once and are what
`combine` runs, so calibration (training/judge/evaluation.py) and the product cannot disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from retriever.candidates import Candidate, Citation


JUDGE, RETRIEVER, FLOOR, EMPTY = "judge", "retriever", "floor", "empty"
"""Verdict.decided_by values."""


@dataclass(frozen=True)
class ScoredCandidate:
    candidate: Candidate
    number: int
    """Its number in the prompt (1-based)."""
    judge_probability: float
    retriever_probability: float
    combined: float

    @property
    def score(self) -> float:
        """The retriever's cosine similarity."""
        return self.candidate.score

    def to_dict(self) -> dict:
        return {
            **self.candidate.to_dict(),
            "number": self.number,
            "judge_probability": round(self.judge_probability, 4),
            "retriever_probability": round(self.retriever_probability, 4),
            "combined": round(self.combined, 4),
        }


@dataclass
class VerdictJSON:
    """The `ask --json` object (DESIGN.md), field for field; the REST API's match response adds
    `answer_id` (app.service.AnswerJSON)."""

    match: Citation | None
    """None: nothing matches — escalate."""
    confidence: float
    """0–1: of the match, or of "no match" when escalating."""
    escalate: bool
    reasoning: str
    candidates: list[dict]
    """What the judge compared (ScoredCandidate.to_dict): similarity and probabilities."""
    latency_s: float
    none_probability: float
    notes: list[str]
    model: str
    decided_by: str
    """"judge", "retriever", "floor" or "empty" (Verdict.decided_by)."""


@dataclass
class Verdict:
    match: Candidate | None
    confidence: float
    """Combined probability of the verdict given: the match's, or "none"'s when escalating."""
    escalate: bool
    reasoning: str
    candidates: list[ScoredCandidate]
    latency_s: float
    notes: list[str] = field(default_factory=list)
    model: str = ""
    none_probability: float = 0.0
    """Combined probability that no candidate answers the ticket."""
    raw_output: str = ""
    """What the model wrote (listwise) or wrote for the best candidate (pairwise), for logs."""
    readings: dict[str, list[float]] = field(default_factory=dict)
    """Listwise: each judge reading ("answer", "commit") as [P(none), P(1), …], for calibration."""
    decided_by: str = JUDGE
    """Which path decided: "judge" (the model, mixed with the retriever), "retriever" (the judge could
    not have changed the verdict, so it was not asked), "floor" (nothing close enough) or "empty"
    (no candidates)."""

    def to_json(self) -> VerdictJSON:
        return VerdictJSON(
            match=self.match.citation() if self.match is not None else None,
            confidence=round(self.confidence, 4),
            escalate=self.escalate,
            reasoning=self.reasoning,
            candidates=[c.to_dict() for c in self.candidates],
            latency_s=round(self.latency_s, 3),
            none_probability=round(self.none_probability, 4),
            notes=list(self.notes),
            model=self.model,
            decided_by=self.decided_by,
        )

    def to_json_dict(self) -> dict:
        """The `ask --json` object of DESIGN.md (plus notes, model, none_probability)."""
        return asdict(self.to_json())


# --- the combination ------------------------------------------------------------------------------


def softmax(values: Sequence[float]) -> list[float]:
    row = np.asarray(values, dtype=np.float64)
    exps = np.exp(row - row.max())
    return (exps / exps.sum()).tolist()


def retriever_matrix(similarities: np.ndarray, temperature: float, none_similarity: float) -> np.ndarray:
    """Rows [P(none), P(1), …]: `similarities` has a column 0 (ignored: it is "none") and -inf for
    candidates a row lacks."""
    logits = np.array(similarities, dtype=np.float64) / temperature
    logits[:, 0] = none_similarity / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def mix(judge: np.ndarray, retriever: np.ndarray, weight: float) -> np.ndarray:
    """w · judge + (1 - w) · retriever, row by row (index 0 = none)."""
    return weight * judge + (1 - weight) * retriever


def mix_matrix(judge: np.ndarray, similarities: np.ndarray, weight: float, temperature: float,
               none_similarity: float) -> np.ndarray:
    """Combined rows for many tickets at once (calibration's grid search)."""
    return mix(judge, retriever_matrix(similarities, temperature, none_similarity), weight)


def decide_matrix(combined: np.ndarray, threshold: float) -> np.ndarray:
    """Each row's choice: the argmax (first on ties), or 0 (escalate) when that is "none" or below threshold."""
    choice = combined.argmax(axis=1)
    best = combined[np.arange(len(combined)), choice]
    return np.where((choice == 0) | (best < threshold), 0, choice)


def retriever_distribution(
    similarities: Sequence[float], *, temperature: float, none_similarity: float
) -> list[float]:
    """[P(none), P(1), …, P(k)] = softmax([none_similarity, cos_1, …, cos_k] / temperature)."""
    row = np.array([[0.0, *similarities]])
    return retriever_matrix(row, temperature, none_similarity)[0].tolist()


def pairwise_distribution(same_probabilities: Sequence[float]) -> list[float]:
    """[P(none), P(1), …] from independent P(same_i), assuming at most one candidate matches."""
    p = np.clip(np.asarray(same_probabilities, dtype=np.float64), 1e-6, 1 - 1e-6)
    log_none = np.log1p(-p).sum()
    return softmax([log_none, *(log_none + np.log(p) - np.log1p(-p))])


def judge_cannot_change(retriever: Sequence[float], judge_weight: float, threshold: float) -> bool:
    """Whether the verdict is the same whatever the judge would say: the mix moves each combined
    probability by at most `judge_weight` from (1 - w)·P_retriever, so the retriever's top choice t
    stays the argmax when (1 - w)·(P_t - P_second) > w, and its escalation is settled when
    (1 - w)·P_t ≥ threshold (never) or w + (1 - w)·P_t < threshold (always). Skipping the judge
    there changes no verdict, only the time it takes."""
    r = sorted(retriever, reverse=True)
    top = max(range(len(retriever)), key=lambda i: (retriever[i], -i))
    w = judge_weight
    if w == 0:  # weighted out: the mix is the retriever's distribution, ties included
        return True
    if len(r) > 1 and (1 - w) * (r[0] - r[1]) <= w:
        return False
    return top == 0 or (1 - w) * r[0] >= threshold or w + (1 - w) * r[0] < threshold


@dataclass(frozen=True)
class Combination:
    judge: list[float]
    retriever: list[float]
    combined: list[float]
    """Index 0 = none, i = candidate i."""
    choice: int
    """Argmax of combined (0 = none)."""
    escalate: bool

    @property
    def confidence(self) -> float:
        return self.combined[0] if self.escalate else self.combined[self.choice]


def combine(
    judge_probabilities: Sequence[float],
    similarities: Sequence[float],
    *,
    judge_weight: float,
    threshold: float,
    temperature: float,
    none_similarity: float,
) -> Combination:
    """Mix the judge's [P(none), P(1..k)] with the retriever's and decide (see the module docstring)."""
    if len(judge_probabilities) != len(similarities) + 1:
        raise ValueError("judge_probabilities must be [none, one per candidate]")
    judge = np.asarray(judge_probabilities, dtype=np.float64)
    judge = judge / judge.sum() if judge.sum() > 0 else np.full(len(judge), 1.0 / len(judge))
    sims = np.array([[0.0, *similarities]])
    retriever = retriever_matrix(sims, temperature, none_similarity)[0]
    combined = mix(judge, retriever, judge_weight)
    choice = int(combined.argmax())
    escalate = int(decide_matrix(combined[None, :], threshold)[0]) == 0
    return Combination(judge.tolist(), retriever.tolist(), combined.tolist(), choice, escalate)


__all__ = [
    "Combination", "ScoredCandidate", "Verdict", "VerdictJSON", "combine", "decide_matrix", "judge_cannot_change",
    "mix", "mix_matrix",
    "pairwise_distribution", "retriever_distribution", "retriever_matrix", "softmax",
]
