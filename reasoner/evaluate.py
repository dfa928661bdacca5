"""Evaluating the pipeline on labelled tickets, stage by stage (pure: no I/O).

    report = evaluate(tickets, [("retriever", search)], judge)   # tickets: {"ticket": str, "label": str | None}
    report.to_json_dict()                                         # what `eval --json` prints

Each retrieval stage (the retriever; the retriever + reranker) is scored by the verdict it gives
alone: the similarity floor, then its calibrated distribution with the judge's weight at 0
(`Judge.retriever_decide`), the verdict the product gives wherever it does not ask the model. The
last stage's candidates go to the judge: "+ judge" is the pipeline. So a user sees on their own
tickets what each stage buys.

A ticket counts as right when the matched candidate's label equals the expected label, or when the
verdict escalates and the expected label is null (out of scope: nothing in the knowledge base fits).
A candidate without a label is identified by its id. "oos" metrics treat escalation as the positive
class.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from reasoner.verdict import Verdict

from retriever.candidates import Candidate

RECALL_AT = 5
JUDGE_STAGE = "+ judge"

Search = Callable[[str, int], list[Candidate]]


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
    stages: dict[str, str | None] = field(default_factory=dict)
    """Each retrieval stage's own prediction (None: it escalates), by stage name."""
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
    """The pipeline's (the "+ judge" stage)."""
    stages: dict[str, dict]
    """Metrics of every stage by name, in pipeline order, the pipeline last."""
    config: dict = field(default_factory=dict)

    def to_json_dict(self) -> dict:
        return {**self.metrics, "stages": self.stages, "config": self.config}


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


def _prediction(verdict: Verdict) -> str | None:
    return None if verdict.escalate or verdict.match is None else label_of(verdict.match)


def _record(ticket: str, expected: str | None, stages: dict, candidates: list[Candidate], verdict: Verdict,
            latency: float) -> TicketRecord:
    predicted = _prediction(verdict)
    return TicketRecord(
        ticket=ticket,
        expected=expected,
        predicted=predicted,
        confidence=verdict.confidence,
        escalate=verdict.escalate,
        correct=is_correct(predicted, verdict.escalate, expected),
        latency_s=latency,
        judge_latency_s=verdict.latency_s,
        retrieved=[label_of(c) for c in candidates[:RECALL_AT]],
        stages=stages,
        match_id=verdict.match.id if verdict.match is not None else None,
        reasoning=verdict.reasoning,
        decided_by=verdict.decided_by,
    )


def _judge_one(item: dict, stages: Sequence[tuple[str, Search]], judge, k: int) -> TicketRecord:
    """Every earlier stage's own verdict (not timed), then the pipeline: the last stage's search and
    the judge, timed as an agent waits for them."""
    ticket = item["ticket"]
    predictions = {name: _prediction(judge.retriever_decide(ticket, search(ticket, k))) for name, search in stages[:-1]}
    started = time.perf_counter()
    candidates = stages[-1][1](ticket, k)
    verdict = judge.decide(ticket, candidates)
    latency = time.perf_counter() - started
    predictions[stages[-1][0]] = _prediction(judge.retriever_decide(ticket, candidates))
    return _record(ticket, item.get("label"), predictions, candidates, verdict, latency)


def evaluate(
    tickets: Iterable[dict],
    stages: Sequence[tuple[str, Search]],
    judge,
    progress: Callable[[int, TicketRecord], None] | None = None,
) -> EvalReport:
    """Run every retrieval stage (name, search), then the judge on the last one's candidates, on every
    ticket; `progress(i, record)` is called after each one."""
    if not stages:
        raise ValueError("evaluate needs at least one retrieval stage")
    k = max(RECALL_AT, judge.config.top_k)
    records: list[TicketRecord] = []
    for i, item in enumerate(tickets):
        records.append(_judge_one(item, stages, judge, k))
        if progress is not None:
            progress(i, records[-1])
    expected = [r.expected for r in records]
    retrieved = [r.retrieved for r in records]
    by_stage = {}
    for name, _ in stages:
        predicted = [r.stages[name] for r in records]
        by_stage[name] = metrics(expected, predicted, [p is None for p in predicted], retrieved)
    pipeline = metrics(expected, [r.predicted for r in records], [r.escalate for r in records], retrieved,
                       [r.latency_s for r in records])
    pipeline["decided_by"] = dict(Counter(r.decided_by for r in records))
    by_stage[JUDGE_STAGE] = pipeline
    config = {"judge": asdict(judge.config), "model": getattr(judge, "model_name", "")}
    return EvalReport(records, pipeline, by_stage, config)


STAGE_COLUMNS = (("accuracy", "accuracy"), ("in_scope_accuracy", "in scope"), ("oos_recall", "oos recall"),
                 ("oos_precision", "oos precision"), ("retrieval_recall_at_5", "recall@5"))


def stage_table(report: EvalReport) -> str:
    """The stages side by side, as `eval` prints them: what each stage buys."""
    width = max(len(name) for name in report.stages) + 2
    lines = [f"{'stage':{width}s}" + "".join(f"{title:>15s}" for _, title in STAGE_COLUMNS)]
    for name, values in report.stages.items():
        cells = "".join(f"{'-' if values.get(key) is None else f'{values[key]:.3f}':>15s}" for key, _ in STAGE_COLUMNS)
        lines.append(f"{name:{width}s}{cells}")
    m = report.metrics
    lines.append(f"{report.metrics['n']} tickets ({m['n_in_scope']} in scope, {m['n_oos']} out of scope); latency p50 "
                 f"{m['latency_p50_s'] or 0:.3f} s, p95 {m['latency_p95_s'] or 0:.3f} s; decided by "
                 + ", ".join(f"{k} {v}" for k, v in sorted(m["decided_by"].items())))
    judge = report.config.get("judge", {})
    if judge.get("judge_weight") == 0 and judge.get("route", True):
        lines.append("the judge's calibrated weight beside this embedder is 0 (it added nothing on validation): "
                     "it is never asked, and '+ judge' is the retriever's verdict")
    return "\n".join(lines)
