"""The cross-encoder reranker on held-out tickets: quality and CPU latency, int8 against fp32.

    python benchmarks/make_eval_sets.py --out .bench          # once: knowledge + held-out tickets
    python benchmarks/reranker.py --reranker data/models/reranker-minilm [--names stackfaq hint3] [--limit 300]

Per set, each ticket is searched once by the product's retriever (the shipped embedder, label
vote, BM25 pool) for its `rerank_pool` (20) best resolutions; the same list is then ordered by
- the retriever alone (what the product does without a reranker),
- the reranker with dynamic int8 Linear layers (the product's CPU default), and fp32.
Top-1 and recall@5 count in-scope tickets. Latency is one ticket x 20 candidates, the rerank call
alone (tokenising included), on `--threads` torch threads: p50 / p95 over the tickets after two
warm-up calls; int8 and fp32 alternate ticket by ticket, so load from other processes hits both
alike. `int8 = fp32 top-1` is the share of tickets whose first candidate is the same.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# the repository first: run as a script, benchmarks/ is on the path and its ingest.py would
# shadow the ingest package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.pipeline import ingest_paths  # noqa: E402
from retriever.embedder import default_adapter_path, shared_embedder  # noqa: E402
from retriever.hybrid import HybridRetriever, RetrieverConfig  # noqa: E402
from retriever.reranker import Reranker, default_reranker_path  # noqa: E402
from retriever.store import KnowledgeStore  # noqa: E402


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, 1000 * (time.perf_counter() - start)


def _right(candidates, label) -> tuple[bool, bool]:
    labels = [c.label for c in candidates]
    return bool(labels) and labels[0] == label, label in labels[:5]


def measure(store: KnowledgeStore, tickets: list[dict], rerankers: dict[str, Reranker], pool: int) -> dict:
    retriever = HybridRetriever(store, RetrieverConfig(rerank_pool=pool))
    hits = {name: [] for name in ["retriever", *rerankers]}
    times: dict[str, list[float]] = {name: [] for name in rerankers}
    firsts: dict[str, list] = {name: [] for name in rerankers}
    for index, ticket in enumerate(tickets):
        candidates = retriever.search(ticket["ticket"], k=pool)
        if ticket["label"] is not None:
            hits["retriever"].append(_right(candidates, ticket["label"]))
        for name, reranker in rerankers.items():
            ranked, ms = _timed(reranker.rerank, ticket["ticket"], candidates)
            if index >= 2:  # warm-up
                times[name].append(ms)
            firsts[name].append(ranked[0].id if ranked else None)
            if ticket["label"] is not None:
                hits[name].append(_right(ranked, ticket["label"]))
    out = {name: {"top1": float(np.mean([h[0] for h in v])), "recall_at_5": float(np.mean([h[1] for h in v]))}
           for name, v in hits.items() if v}
    for name, values in times.items():
        out[name].update(p50_ms=float(np.percentile(values, 50)), p95_ms=float(np.percentile(values, 95)))
    if {"int8", "fp32"} <= set(rerankers):
        out["int8_fp32_top1_agreement"] = float(np.mean([a == b for a, b in zip(firsts["int8"], firsts["fp32"])]))
    out["n_in_scope"] = len(hits["retriever"])
    return out


def _line(name: str, result: dict) -> str:
    latency = f", {result['p50_ms']:.0f} / {result['p95_ms']:.0f} ms p50 / p95" if "p50_ms" in result else ""
    return f"  {name:10s} top-1 {result['top1']:.4f}  recall@5 {result['recall_at_5']:.4f}{latency}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--bench", type=Path, default=Path(".bench"))
    parser.add_argument("--names", nargs="+", default=["banking77", "clinc150", "hint3", "stackfaq"])
    parser.add_argument("--reranker", type=Path, default=None, help="reranker folder (default: the shipped one)")
    parser.add_argument("--pool", type=int, default=RetrieverConfig.rerank_pool, help="candidates reranked")
    parser.add_argument("--limit", type=int, default=0, help="seeded sample of tickets per set (0 = all)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-fp32", action="store_true", help="measure the int8 reranker only")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    folder = args.reranker or default_reranker_path()
    if folder is None:
        parser.error("no reranker: pass --reranker FOLDER (data/models/reranker-minilm is not shipped)")
    rerankers = {"int8": Reranker(folder, quantize=True)}
    if not args.no_fp32:
        rerankers["fp32"] = Reranker(folder, quantize=False)
    adapter = default_adapter_path()
    embedder = shared_embedder(adapter=str(adapter) if adapter else None)
    print(f"embedder {embedder.name}; reranker {folder} (alpha {rerankers['int8'].settings.scoring.alpha}); "
          f"{args.threads} threads")
    report = {"reranker": str(folder), "embedder": embedder.name, "threads": args.threads, "sets": {}}
    for name in args.names:
        store = KnowledgeStore(Path(tempfile.mkdtemp(prefix=f"rr-{name}-")), embedder)
        ingest_paths(store, [args.bench / f"{name}_knowledge.csv"])
        tickets = [json.loads(line) for line in (args.bench / f"{name}_val.jsonl").open()]
        if args.limit and len(tickets) > args.limit:
            tickets = random.Random(13).sample(tickets, args.limit)
        result = measure(store, tickets, rerankers, args.pool)
        report["sets"][name] = result
        print(f"{name}: {result['n_in_scope']} in-scope tickets of {len(tickets)}")
        for variant in ["retriever", *rerankers]:
            print(_line(variant, result[variant]))
        if "int8_fp32_top1_agreement" in result:
            print(f"  int8 = fp32 top-1 on {result['int8_fp32_top1_agreement']:.3f} of tickets", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
