"""Label top-1 and recall@5 of plain dense search vs the hybrid retriever's settings.

    python benchmarks/make_eval_sets.py --out .bench          # once: knowledge + held-out tickets
    python benchmarks/retrieval_quality.py --bench .bench [--names banking77 clinc150 hint3]
    python benchmarks/retrieval_quality.py --embedder-adapter data/models/embedder-minilm   # fine-tuned

For sets with out-of-scope tickets it also prints out-of-scope handling by a threshold on the best
candidate's cosine similarity (what the product's escalate_below compares): `oos` at the best
threshold for this very set (an optimistic ceiling), and `at escalate_below` at a fixed one — the
adapter's calibrated `escalate_below` from its embedder.json, or `--escalate-below X` (e.g. the
base model's value calibrated by the same training run, metrics.before.escalate_below).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# the repository first: run as a script, benchmarks/ is on the path and its ingest.py would
# shadow the ingest package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.pipeline import ingest_paths  # noqa: E402
from retriever.embedder import shared_embedder  # noqa: E402
from retriever.hybrid import HybridRetriever, RetrieverConfig  # noqa: E402
from retriever.store import KnowledgeStore  # noqa: E402

VARIANTS = {
    "best row (dense only)": RetrieverConfig(bm25_pool=0, label_votes=1),
    "best row (dense + BM25 pool)": RetrieverConfig(label_votes=1),
    "label vote top-3 (dense only)": RetrieverConfig(bm25_pool=0),
    "label vote top-3 (dense + BM25 pool): product": RetrieverConfig(),
}


def evaluate(retriever: HybridRetriever, tickets: list[dict], escalate_below: float | None = None) -> dict:
    top1 = recall5 = n_in = 0
    scores = []  # (best similarity among the candidates, is out of scope, top-1 right)
    for t in tickets:
        candidates = retriever.search(t["ticket"], k=5)
        labels = [c.label for c in candidates]
        right = bool(labels) and labels[0] == t["label"]
        scores.append((max((c.score for c in candidates), default=0.0), t["label"] is None, right))
        if t["label"] is not None:
            n_in += 1
            top1 += right
            recall5 += t["label"] in labels
    fixed = at_threshold(scores, escalate_below) if escalate_below is not None else None
    return {"top1": top1 / n_in, "recall@5": recall5 / n_in, "oos": oos_at_threshold(scores),
            "at_escalate_below": fixed}


def at_threshold(scores: list[tuple[float, bool, bool]], threshold: float) -> dict:
    """Escalate below `threshold`: accuracy, in-scope accuracy (right and not escalated), and
    out-of-scope recall (None without out-of-scope tickets)."""
    n_oos = sum(oos for _, oos, _ in scores)
    in_right = sum(right and s >= threshold for s, oos, right in scores if not oos)
    oos_caught = sum(s < threshold for s, oos, _ in scores if oos)
    return {"threshold": threshold, "accuracy": (in_right + oos_caught) / len(scores),
            "in_scope_accuracy": in_right / (len(scores) - n_oos),
            "oos_recall": oos_caught / n_oos if n_oos else None}


def oos_at_threshold(scores: list[tuple[float, bool, bool]]) -> dict | None:
    """Best threshold on the top similarity: escalate below it."""
    n_oos = sum(oos for _, oos, _ in scores)
    if not n_oos:
        return None
    best = None
    for threshold in [x / 100 for x in range(20, 95)]:
        result = at_threshold(scores, threshold)
        if best is None or result["accuracy"] > best["accuracy"]:
            best = result
    return best


def _short(result: dict | None) -> str:
    if not result:
        return "-"
    return (f"t={result['threshold']:.3f} acc={result['accuracy']:.4f} in-scope={result['in_scope_accuracy']:.4f}"
            + (f" oos_recall={result['oos_recall']:.4f}" if result["oos_recall"] is not None else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--bench", type=Path, default=Path(".bench"))
    parser.add_argument("--names", nargs="+", default=["banking77", "clinc150"])
    parser.add_argument("--embedder-adapter", type=Path, default=None,
                        help="LoRA adapter folder for the embedder (training/embedder); default: the base model")
    parser.add_argument("--escalate-below", type=float, default=None,
                        help="fixed similarity threshold for out-of-scope figures; default: the adapter's")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME",
                        help=f"retriever settings to measure (default all: {', '.join(VARIANTS)})")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()
    embedder = shared_embedder(adapter=str(args.embedder_adapter) if args.embedder_adapter else None)
    escalate_below = args.escalate_below if args.escalate_below is not None else embedder.escalate_below
    print(f"embedder: {embedder.name} ({embedder.hash}), escalate_below {escalate_below}")
    report = {"embedder": embedder.name, "embedder_hash": embedder.hash, "escalate_below": escalate_below, "sets": {}}
    for name in args.names:
        home = Path(tempfile.mkdtemp(prefix=f"rq-{name}-"))
        store = KnowledgeStore(home, embedder)
        start = time.time()
        ingest_paths(store, [args.bench / f"{name}_knowledge.csv"])
        print(f"{name}: ingested {store.count()} chunks in {time.time() - start:.1f}s")
        tickets = [json.loads(line) for line in (args.bench / f"{name}_val.jsonl").open()]
        report["sets"][name] = {}
        for variant in args.variants:
            start = time.time()
            result = evaluate(HybridRetriever(store, VARIANTS[variant]), tickets, escalate_below)
            ms = 1000 * (time.time() - start) / len(tickets)
            report["sets"][name][variant] = {**result, "ms_per_query": ms, "n": len(tickets)}
            has_oos = any(t["label"] is None for t in tickets)
            print(f"  {variant:22s} top1={result['top1']:.4f} recall@5={result['recall@5']:.4f} ({ms:.1f} ms/query)"
                  + (f"\n  {'':22s} oos best {_short(result['oos'])}\n  {'':22s} at escalate_below "
                     f"{_short(result['at_escalate_below'])}" if has_oos else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
