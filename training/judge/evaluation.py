"""Verdict metrics on validation examples and calibration of how the judge is combined.

For each listwise validation example we get the judge's distribution over [none, 1..k]:
- "judge": the reasoner's own `Judge` (generates the reasoning, reads the answer token): what
  users will get, and the numbers to report;
- "teacher_forced": one forward pass over the prompt + the reference reasoning, reading the answer
  token's distribution. Fast, but optimistic (the reference reasoning already leans towards the
  answer, e.g. "None fits."): a smoke-test proxy, never a number to report.

Calibration searches the combination parameters the judge reads from agent_helper.json
(judge_weight, threshold, retriever_temperature, retriever_none_similarity) for the best
validation accuracy, with the functions `reasoner.verdict.combine` itself runs (a test checks
both agree). The retriever alone is the same search with judge_weight = 0, so the two are
compared on the same examples.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from reasoner import prompt
from reasoner.judge import JudgeConfig
from reasoner.verdict import decide_matrix, mix_matrix
from training.judge.data.schema import Example, render

WEIGHTS = tuple(round(x * 0.1, 1) for x in range(11))
TEMPERATURES = (0.02, 0.05, 0.1)
THRESHOLDS = tuple(round(x * 0.05, 2) for x in range(19))


@dataclass(frozen=True)
class Judged:
    """One validation example as the evaluation sees it."""

    judge: tuple[float, ...]
    """Judge's [P(none), P(1), …, P(k)]."""
    similarities: tuple[float, ...]
    gold: int
    """Right choice, 0 = none."""
    labels: tuple[str | None, ...]
    """Candidates' labels, for label-level F1."""


@dataclass(frozen=True)
class Calibration:
    judge_weight: float
    threshold: float
    retriever_temperature: float
    retriever_none_similarity: float


def listwise_for_eval(examples: Sequence[Example], top_k: int, limit: int, seed: int) -> list[Example]:
    import random

    chosen = [e for e in examples if e.format == prompt.LISTWISE]
    random.Random(f"{seed}:eval").shuffle(chosen)
    chosen = chosen[:limit] if limit else chosen
    return [_cut(e, top_k) for e in chosen]


def _cut(example: Example, top_k: int) -> Example:
    if len(example.candidates) <= top_k:
        return example
    from dataclasses import replace

    choice = example.choice if example.choice <= top_k else 0
    return replace(example, candidates=example.candidates[:top_k], choice=choice)


def _judged(example: Example, probabilities: Sequence[float]) -> Judged:
    return Judged(
        judge=tuple(float(p) for p in probabilities),
        similarities=tuple(c.score for c in example.candidates),
        gold=example.choice,
        labels=tuple(c.label for c in example.candidates),
    )


def judge_with_reasoner(examples: Sequence[Example], model, tokenizer, judge_format: str, top_k: int,
                        max_new_tokens: int, backend: str, progress=None, batch_size: int = 8) -> list[Judged]:
    """Judge each example with reasoner.judge.Judge over the in-memory model, in batches."""
    from reasoner.backends import LoadedModel, ModelInfo
    from reasoner.judge import Judge
    from reasoner.metadata import AdapterMetadata

    info = ModelInfo(base="training", adapter=None, backend=backend, device=str(model.device),
                     prompt_version=prompt.PROMPT_VERSION)
    judge = Judge(LoadedModel(model, tokenizer, info, AdapterMetadata({"prompt_format": judge_format})),
                  JudgeConfig(prompt_format=judge_format, top_k=top_k, max_new_tokens=max_new_tokens))
    out = []
    for begin in range(0, len(examples), batch_size):
        batch = examples[begin : begin + batch_size]
        verdicts = judge.decide_many([(e.ticket, e.prompt_candidates()) for e in batch], batch_size)
        for example, verdict in zip(batch, verdicts):
            picks = [c.judge_probability for c in verdict.candidates]
            out.append(_judged(example, [max(0.0, 1.0 - sum(picks)), *picks]))
            if progress:
                progress()
    return out


def judge_teacher_forced(examples: Sequence[Example], model, tokenizer, batch_size: int,
                         progress=None) -> list[Judged]:
    """Answer-token distribution after prompt + reference reasoning + "Answer: " (batched)."""
    import torch

    out = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        contexts = [_context_ids(e, tokenizer) for e in batch]
        width = max(len(c) for c in contexts)
        pad = tokenizer.pad_token_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, context in enumerate(contexts):  # left padding: the last position is the answer slot
            ids[row, width - len(context):] = torch.tensor(context)
            mask[row, width - len(context):] = 1
        device = next(model.parameters()).device
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, -1, :].float()
        for row, example in enumerate(batch):
            options = prompt.choice_token_ids(tokenizer, len(example.candidates))
            probs = torch.softmax(logits[row, options], dim=-1).tolist()
            out.append(_judged(example, probs))
            if progress:
                progress()
    return out


def _context_ids(example: Example, tokenizer) -> list[int]:
    prompt_text, completion = render(example, tokenizer)
    cut = completion.rindex(prompt.CHOICE_LEAD) + len(prompt.CHOICE_LEAD)
    return (tokenizer.encode(prompt_text, add_special_tokens=False)
            + tokenizer.encode(completion[:cut], add_special_tokens=False))


# --- metrics ------------------------------------------------------------------------------------


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def verdict_metrics(judged: Sequence[Judged], predictions: Sequence[int]) -> dict:
    """Accuracy, in-scope accuracy, escalation precision/recall/F1, label-level macro F1."""
    n = len(judged)
    if not n:
        return {"n": 0}
    gold = np.array([j.gold for j in judged])
    pred = np.array(predictions)
    in_scope = gold > 0
    escalate_pred, escalate_gold = pred == 0, gold == 0
    tp = int((escalate_pred & escalate_gold).sum())
    precision = tp / max(int(escalate_pred.sum()), 1)
    recall = tp / max(int(escalate_gold.sum()), 1)
    return {
        "n": n,
        "accuracy": float((pred == gold).mean()),
        "in_scope_accuracy": float((pred == gold)[in_scope].mean()) if in_scope.any() else None,
        "none_precision": precision,
        "none_recall": recall,
        "none_f1": _f1(precision, recall),
        "macro_f1": _macro_f1(judged, predictions),
    }


def _label(j: Judged, choice: int) -> str:
    return "<none>" if choice == 0 else str(j.labels[choice - 1])


def _macro_f1(judged: Sequence[Judged], predictions: Sequence[int]) -> float:
    gold = [_label(j, j.gold) for j in judged]
    pred = [_label(j, p) for j, p in zip(judged, predictions)]
    scores = []
    for label in sorted(set(gold)):
        tp = sum(g == label and p == label for g, p in zip(gold, pred))
        precision = tp / max(sum(p == label for p in pred), 1)
        recall = tp / max(sum(g == label for g in gold), 1)
        scores.append(_f1(precision, recall))
    return float(np.mean(scores))


def argmax_predictions(judged: Sequence[Judged]) -> list[int]:
    return [int(np.argmax(j.judge)) for j in judged]


# --- calibration --------------------------------------------------------------------------------


def _padded(judged: Sequence[Judged]):
    """Arrays over a fixed width k+1; missing candidates are masked out (-inf / 0)."""
    width = max(len(j.judge) for j in judged)
    judge = np.zeros((len(judged), width))
    sims = np.full((len(judged), width), -np.inf)
    for row, j in enumerate(judged):
        total = sum(j.judge)
        judge[row, : len(j.judge)] = [p / total for p in j.judge] if total > 0 else 1.0 / len(j.judge)
        sims[row, 1 : len(j.judge)] = j.similarities
    return judge, sims, np.array([j.gold for j in judged])


def _none_similarities(sims: np.ndarray) -> list[float]:
    top = sims[:, 1:].max(axis=1)
    top = top[np.isfinite(top)]
    grid = {round(float(x), 3) for x in np.quantile(top, np.linspace(0.0, 1.0, 21))} if len(top) else set()
    return sorted(grid | {JudgeConfig.retriever_none_similarity})


def calibrate(judged: Sequence[Judged], weights: Sequence[float] = WEIGHTS) -> tuple[Calibration, dict]:
    """Grid search for the best validation accuracy; ties keep the first (lowest weight/threshold)."""
    judge, sims, gold = _padded(judged)
    best, best_acc = None, -1.0
    for weight, temperature, none_sim in itertools.product(weights, TEMPERATURES, _none_similarities(sims)):
        combined = mix_matrix(judge, sims, weight, temperature, none_sim)
        for threshold in THRESHOLDS:
            accuracy = float((decide_matrix(combined, threshold) == gold).mean())
            if accuracy > best_acc + 1e-12:
                best_acc, best = accuracy, Calibration(weight, threshold, temperature, none_sim)
    return best, verdict_metrics(judged, predictions(judged, best))


def calibrate_weight(judged: Sequence[Judged], retriever: Calibration,
                     weights: Sequence[float] = WEIGHTS) -> Calibration:
    """Only the judge's weight, over `retriever`'s temperature, none-similarity and threshold: what
    the judge adds on top of a retriever calibrated already. Ties keep the lowest weight, so a
    judge that adds nothing is weighted out (0)."""
    gold = np.array([j.gold for j in judged])
    best, best_acc = None, -1.0
    for weight in sorted(weights):
        candidate = Calibration(weight, retriever.threshold, retriever.retriever_temperature,
                                retriever.retriever_none_similarity)
        accuracy = float((np.array(predictions(judged, candidate)) == gold).mean())
        if accuracy > best_acc + 1e-12:
            best_acc, best = accuracy, candidate
    return best


def predictions(judged: Sequence[Judged], c: Calibration) -> list[int]:
    judge, sims, _ = _padded(judged)
    combined = mix_matrix(judge, sims, c.judge_weight, c.retriever_temperature, c.retriever_none_similarity)
    return decide_matrix(combined, c.threshold).tolist()


def cross_fitted_predictions(judged: Sequence[Judged], weights: Sequence[float] = WEIGHTS,
                             fit: Callable[[Sequence[Judged]], Calibration] | None = None) -> list[int]:
    """Calibrated decisions on examples the calibration did not see, in the examples' order:
    calibrate on the even-numbered half, decide the odd half, and the other way round; too few
    examples fall back to in-sample. `fit` makes a calibration from examples (default: the whole
    grid over `weights`; e.g. `calibrate_weight` to fit the judge's weight alone)."""
    fit = fit or (lambda part: calibrate(part, weights)[0])
    halves = [list(range(0, len(judged), 2)), list(range(1, len(judged), 2))]
    if min(len(h) for h in halves) < 2:
        return predictions(judged, fit(judged))
    choices = [0] * len(judged)
    for fitted_on, score in (halves, halves[::-1]):
        calibration = fit([judged[i] for i in fitted_on])
        for i, choice in zip(score, predictions([judged[i] for i in score], calibration)):
            choices[i] = choice
    return choices


def cross_fitted(judged: Sequence[Judged], weights: Sequence[float] = WEIGHTS) -> dict:
    """Metrics of the cross-fitted decisions (the reported numbers)."""
    return verdict_metrics(judged, cross_fitted_predictions(judged, weights))


def evaluate(judged: Sequence[Judged]) -> dict:
    """Judge alone, retriever alone and both combined; the last two calibrated, their metrics
    cross-fitted; `calibration` (fitted on all examples) is what the adapter ships with."""
    combined, _ = calibrate(judged)
    retriever, _ = calibrate(judged, weights=(0.0,))
    return {
        "judge_alone": verdict_metrics(judged, argmax_predictions(judged)),
        "retriever_alone": {**cross_fitted(judged, (0.0,)), "calibration": asdict(retriever)},
        "combined": {**cross_fitted(judged), "calibration": asdict(combined)},
        "calibration": asdict(combined),
    }


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
