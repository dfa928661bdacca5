"""Label top-1 and recall@5 of plain dense search vs the hybrid retriever's settings.

    python benchmarks/make_eval_sets.py --out .bench          # once: knowledge + held-out tickets
    python benchmarks/retrieval_quality.py --bench .bench [--names banking77 clinc150]

For sets with out-of-scope tickets it also prints the best out-of-scope recall reachable with a
similarity threshold on the top candidate at >= 95% of the in-scope top-1 accuracy kept.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ingest.pipeline import ingest_paths
from retriever.embedder import shared_embedder
from retriever.hybrid import HybridRetriever, RetrieverConfig
from retriever.store import KnowledgeStore

VARIANTS = {
    "dense": RetrieverConfig(bm25_pool=0),
    "hybrid w=0.3": RetrieverConfig(bm25_weight=0.3),
    "hybrid w=0.5": RetrieverConfig(bm25_weight=0.5),
    "hybrid w=0.3 votes=3": RetrieverConfig(bm25_weight=0.3, group_votes=3),
    "dense votes=3": RetrieverConfig(bm25_pool=0, group_votes=3),
}


def evaluate(retriever: HybridRetriever, tickets: list[dict]) -> dict:
    top1 = recall5 = n_in = 0
    scores = []  # (top similarity, is out of scope, top-1 right)
    for t in tickets:
        candidates = retriever.search(t["ticket"], k=5)
        labels = [c.label for c in candidates]
        right = bool(labels) and labels[0] == t["label"]
        scores.append((candidates[0].score if candidates else 0.0, t["label"] is None, right))
        if t["label"] is not None:
            n_in += 1
            top1 += right
            recall5 += t["label"] in labels
    return {"top1": top1 / n_in, "recall@5": recall5 / n_in, "oos": oos_at_threshold(scores)}


def oos_at_threshold(scores: list[tuple[float, bool, bool]]) -> dict | None:
    """Best threshold on the top similarity: escalate below it."""
    n_oos = sum(oos for _, oos, _ in scores)
    if not n_oos:
        return None
    best = None
    for threshold in [x / 100 for x in range(20, 90)]:
        in_right = sum(right and s >= threshold for s, oos, right in scores if not oos)
        oos_caught = sum(s < threshold for s, oos, _ in scores if oos)
        accuracy = (in_right + oos_caught) / len(scores)
        if best is None or accuracy > best["accuracy"]:
            best = {"threshold": threshold, "accuracy": accuracy,
                    "in_scope_accuracy": in_right / (len(scores) - n_oos),
                    "oos_recall": oos_caught / n_oos}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--bench", type=Path, default=Path(".bench"))
    parser.add_argument("--names", nargs="+", default=["banking77", "clinc150"])
    args = parser.parse_args()
    for name in args.names:
        home = Path(tempfile.mkdtemp(prefix=f"rq-{name}-"))
        store = KnowledgeStore(home, shared_embedder())
        start = time.time()
        ingest_paths(store, [args.bench / f"{name}_knowledge.csv"])
        print(f"{name}: ingested {store.count()} chunks in {time.time() - start:.1f}s")
        tickets = [json.loads(line) for line in (args.bench / f"{name}_val.jsonl").open()]
        for variant, config in VARIANTS.items():
            start = time.time()
            result = evaluate(HybridRetriever(store, config), tickets)
            ms = 1000 * (time.time() - start) / len(tickets)
            print(f"  {variant:22s} top1={result['top1']:.4f} recall@5={result['recall@5']:.4f} "
                  f"({ms:.1f} ms/query) oos={result['oos']}")


if __name__ == "__main__":
    main()
