"""Validation of a reranker the way the product uses it, and the scoring fitted on validation.

Each validation ticket has the retriever's candidate list (mining.py). Three orders are compared
on in-scope tickets: the retriever's (label vote), the reranker's alone (logit), and the fused
score the product uses (retriever.reranker.Scoring). Top-1 and recall@5 count a ticket as right
when its resolution is first / among the first five; a ticket whose resolution the retriever
missed counts as wrong for every order (the reranker only reorders).

Fitted here, on validation: the standardisation constants, the fusion weight alpha (the grid
value with the best fused top-1) and the Platt calibration of the fused score (over in-scope and
out-of-scope tickets' candidates). The reported fused numbers are cross-fitted: alpha is fitted
on one half of the tickets and scored on the other, both ways, so no ticket scores with a weight
fitted on itself.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from retriever.reranker import Scoring
from training.splits import fraction
from training.reranker.mining import Candidates

ALPHAS = np.round(np.arange(0.0, 1.0001, 0.05), 2)
TOP_K = 5


def _ranks(lists: list[Candidates], scores: list[np.ndarray]) -> np.ndarray:
    """Rank of the right candidate per in-scope list (0 = first); len(list) where it is missing."""
    ranks = []
    for item, score in zip(lists, scores):
        if item.positive is None:
            ranks.append(len(item.rows) + TOP_K)
        else:
            ranks.append(int((score > score[item.positive]).sum()))
    return np.array(ranks)


def order_metrics(lists: list[Candidates], scores: list[np.ndarray]) -> dict:
    ranks = _ranks(lists, scores)
    if not len(ranks):
        return {"top1": None, "recall_at_5": None}
    return {"top1": float((ranks == 0).mean()), "recall_at_5": float((ranks < TOP_K).mean())}


def _standardiser(lists: list[Candidates], logits: list[np.ndarray]) -> dict:
    all_logits = np.concatenate(logits) if logits else np.zeros(1)
    all_votes = np.concatenate([np.asarray(item.votes) for item in lists]) if lists else np.zeros(1)
    return {"logit_mean": float(all_logits.mean()), "logit_std": float(all_logits.std() or 1.0),
            "label_mean": float(all_votes.mean()), "label_std": float(all_votes.std() or 1.0)}


def _fused(lists, logits, alpha: float, constants: dict) -> list[np.ndarray]:
    scoring = Scoring(alpha=alpha, platt_a=1.0, platt_b=0.0, **constants)
    return [scoring.fused(logit, np.asarray(item.votes)) for item, logit in zip(lists, logits)]


def best_alpha(lists, logits, constants: dict) -> float:
    """The fusion weight with the best top-1 (ties: the one with the best mean reciprocal rank,
    then the smallest weight, the closest to the retriever's own order)."""
    best, best_key = 0.0, None
    for alpha in ALPHAS:
        ranks = _ranks(lists, _fused(lists, logits, float(alpha), constants))
        key = ((ranks == 0).mean(), (1.0 / (ranks + 1)).mean())
        if best_key is None or key > best_key:
            best, best_key = float(alpha), key
    return best


def platt(values: np.ndarray, targets: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Logistic regression of targets on one feature (Newton's method, a tiny ridge for safety)."""
    a, b = 1.0, 0.0
    x = np.asarray(values, np.float64)
    y = np.asarray(targets, np.float64)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a * x + b, -60.0, 60.0)))
        w = p * (1 - p) + 1e-9
        gradient = np.array([np.sum((p - y) * x) + 1e-6 * a, np.sum(p - y)])
        hessian = np.array([[np.sum(w * x * x) + 1e-6, np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        step = np.linalg.solve(hessian, gradient)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


def fit_scoring(lists: list[Candidates], logits: list[np.ndarray], in_scope: list[bool]) -> Scoring:
    """Standardisation, alpha (in-scope tickets) and calibration (all tickets) on validation."""
    constants = _standardiser(lists, logits)
    ranked = [i for i, keep in enumerate(in_scope) if keep]
    alpha = best_alpha([lists[i] for i in ranked], [logits[i] for i in ranked], constants)
    fused = _fused(lists, logits, alpha, constants)
    targets = [np.arange(len(item.rows)) == (item.positive if item.positive is not None else -1) for item in lists]
    a, b = platt(np.concatenate(fused), np.concatenate(targets).astype(float))
    return Scoring(alpha=alpha, platt_a=a, platt_b=b, **constants)


def _halves(lists: list[Candidates], seed: int) -> tuple[list[int], list[int]]:
    first = [i for i, item in enumerate(lists) if fraction(f"half\x1f{item.ticket}", seed) < 0.5]
    chosen = set(first)
    return first, [i for i in range(len(lists)) if i not in chosen]


def cross_fitted(lists: list[Candidates], logits: list[np.ndarray], constants: dict, seed: int) -> dict:
    """Fused top-1 / recall@5 with alpha fitted on the other half of the tickets."""
    fused: list[np.ndarray | None] = [None] * len(lists)
    alphas = []
    halves = _halves(lists, seed)
    for fit, score in (halves, halves[::-1]):
        alpha = best_alpha([lists[i] for i in fit], [logits[i] for i in fit], constants) if fit else 0.0
        alphas.append(alpha)
        for i, value in zip(score, _fused([lists[i] for i in score], [logits[i] for i in score], alpha, constants)):
            fused[i] = value
    return {**order_metrics(lists, fused), "alphas": alphas}


def validation_metrics(lists: list[Candidates], logits: list[np.ndarray], scoring: Scoring, seed: int) -> dict:
    """Retriever, reranker alone, fused (fitted alpha) and fused cross-fitted, overall and per
    knowledge base; in-scope tickets only (`lists` are the in-scope ones)."""
    constants = {k: getattr(scoring, k) for k in ("logit_mean", "logit_std", "label_mean", "label_std")}

    def block(index: list[int]) -> dict:
        chosen, chosen_logits = [lists[i] for i in index], [logits[i] for i in index]
        fused = [scoring.fused(logit, np.asarray(item.votes)) for item, logit in zip(chosen, chosen_logits)]
        return {"n": len(index), "retriever": order_metrics(chosen, [np.asarray(item.votes) for item in chosen]),
                "reranker": order_metrics(chosen, chosen_logits), "fused": order_metrics(chosen, fused),
                "fused_cross_fitted": cross_fitted(chosen, chosen_logits, constants, seed),
                "retrieved": float(np.mean([item.positive is not None for item in chosen])) if chosen else None}

    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(lists):
        groups[item.group].append(i)
    return {**block(list(range(len(lists)))), "groups": {g: block(ix) for g, ix in sorted(groups.items())}}


def summary(metrics: dict) -> str:
    def pair(m: dict) -> str:
        return "-" if m["top1"] is None else f"{m['top1']:.3f} / {m['recall_at_5']:.3f}"

    return (f"top-1 / recall@5 over {metrics['n']} tickets: retriever {pair(metrics['retriever'])}, reranker "
            f"{pair(metrics['reranker'])}, fused {pair(metrics['fused'])} (cross-fitted "
            f"{pair(metrics['fused_cross_fitted'])})")
