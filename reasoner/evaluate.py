"""Evaluating the judge on labelled tickets, beside the retriever's top-1 alone (pure: no I/O).

    report = evaluate(tickets, search, judge)       # tickets: {"ticket": str, "label": str | None}
    report.to_json_dict()                           # the `eval --json` object of DESIGN.md

A ticket counts as right when the matched candidate's label equals the expected label, or when the
verdict escalates and the expected label is null (out of scope: nothing in the knowledge base fits).
A candidate without a label is identified by its id. "oos" metrics treat escalation as the positive
class. The baseline is the retriever's top-1 candidate alone, accepted when its cosine similarity is
at least the judge's `retriever_none_similarity`, escalating otherwise.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from retriever.candidates import Candidate

RECALL_AT = 5


@dataclass(frozen=True)
class TicketRecord:
    ticket: str
    expected: str | None
    predicted: str | None
    """Label of the matched candidate; None when the verdict escalates."""
    confidence: float
    escalate: bool
    correct: bool
    latency_s: float
    """Search plus judge, wall clock."""
    judge_latency_s: float
    retrieved: list[str | None]
    """Labels of the top-5 candidates the retriever returned."""
    baseline_predicted: str | None
    baseline_correct: bool
    match_id: str | None = None
    reasoning: str = ""
    decided_by: str = ""
    """Which path decided (Verdict.decided_by)."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalReport:
    records: list[TicketRecord]
    metrics: dict
    baseline: dict
    config: dict = field(default_factory=dict)

    def to_json_dict(self) -> dict:
        return {**self.metrics, "baseline": self.baseline, "config": self.config}


def label_of(candidate: Candidate) -> str:
    return candidate.label if candidate.label is not None else candidate.id


def is_correct(predicted: str | None, escalate: bool, expected: str | None) -> bool:
    if expected is None:
        return escalate
    return not escalate and predicted == expected


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def metrics(
    expected: Sequence[str | None],
    predicted: Sequence[str | None],
    escalated: Sequence[bool],
    retrieved: Sequence[Sequence[str | None]] | None = None,
    latencies: Sequence[float] | None = None,
) -> dict:
    """n, accuracy, in_scope_accuracy, oos_recall, oos_precision, retrieval_recall_at_5, latency p50/p95."""
    n = len(expected)
    correct = [is_correct(p, e_, x) for p, e_, x in zip(predicted, escalated, expected)]
    in_scope = [i for i, x in enumerate(expected) if x is not None]
    oos = [i for i, x in enumerate(expected) if x is None]
    escalations = [i for i in range(n) if escalated[i]]
    result = {
        "n": n,
        "accuracy": _ratio(sum(correct), n),
        "in_scope_accuracy": _ratio(sum(correct[i] for i in in_scope), len(in_scope)),
        "oos_recall": _ratio(sum(escalated[i] for i in oos), len(oos)),
        "oos_precision": _ratio(sum(expected[i] is None for i in escalations), len(escalations)),
        "n_in_scope": len(in_scope),
        "n_oos": len(oos),
    }
    if retrieved is not None:
        hits = sum(expected[i] in list(retrieved[i])[:RECALL_AT] for i in in_scope)
        result["retrieval_recall_at_5"] = _ratio(hits, len(in_scope))
    if latencies is not None:
        result["latency_p50_s"] = percentile(latencies, 50)
        result["latency_p95_s"] = percentile(latencies, 95)
    return result


def evaluate(
    tickets: Iterable[dict],
    search: Callable[[str, int], list[Candidate]],
    judge,
    progress: Callable[[int, TicketRecord], None] | None = None,
) -> EvalReport:
    """Run search + judge on every ticket; `progress(i, record)` is called after each one."""
    k = max(RECALL_AT, judge.config.top_k)
    none_similarity = judge.config.retriever_none_similarity
    records: list[TicketRecord] = []
    for i, item in enumerate(tickets):
        ticket, expected = item["ticket"], item.get("label")
        started = time.perf_counter()
        candidates = search(ticket, k)
        verdict = judge.decide(ticket, candidates)
        latency = time.perf_counter() - started
        predicted = None if verdict.escalate or verdict.match is None else label_of(verdict.match)
        top = candidates[0] if candidates else None
        baseline_escalate = top is None or top.score < none_similarity
        baseline_predicted = None if baseline_escalate else label_of(top)
        record = TicketRecord(
            ticket=ticket,
            expected=expected,
            predicted=predicted,
            confidence=verdict.confidence,
            escalate=verdict.escalate,
            correct=is_correct(predicted, verdict.escalate, expected),
            latency_s=latency,
            judge_latency_s=verdict.latency_s,
            retrieved=[label_of(c) for c in candidates[:RECALL_AT]],
            baseline_predicted=baseline_predicted,
            baseline_correct=is_correct(baseline_predicted, baseline_escalate, expected),
            match_id=verdict.match.id if verdict.match is not None else None,
            reasoning=verdict.reasoning,
            decided_by=verdict.decided_by,
        )
        records.append(record)
        if progress is not None:
            progress(i, record)
    expected = [r.expected for r in records]
    retrieved = [r.retrieved for r in records]
    judge_metrics = metrics(
        expected,
        [r.predicted for r in records],
        [r.escalate for r in records],
        retrieved,
        [r.latency_s for r in records],
    )
    baseline = metrics(
        expected,
        [r.baseline_predicted for r in records],
        [r.baseline_predicted is None for r in records],
        retrieved,
    )
    baseline["threshold"] = none_similarity
    judge_metrics["decided_by"] = dict(Counter(r.decided_by for r in records))
    config = {"judge": asdict(judge.config), "model": getattr(judge, "model_name", "")}
    return EvalReport(records, judge_metrics, baseline, config)
