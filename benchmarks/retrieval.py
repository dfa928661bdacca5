"""Query latency of the hybrid retriever at 1k, 10k and 100k chunks (target: p95 <= 50 ms at 100k).

    python benchmarks/retrieval.py [--sizes 1000 10000 100000] [--queries 200]

The knowledge base is synthetic but realistic: support questions built from templates with
varied products, numbers and phrasings, embedded with the real packaged model (building the
100k store takes a few minutes on 2 cores; the build time is printed too).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from retriever.chunks import ROW, ChunkRecord, new_document
from retriever.embedder import shared_embedder
from retriever.hybrid import HybridRetriever
from retriever.store import KnowledgeStore

ASKS = ["How do I {v} my {o}?", "Can I {v} the {o} I got on {d}?", "Why can't I {v} my {o} #{n}?",
        "Is it possible to {v} an {o} from abroad?", "I need to {v} my {o}, order {n}.",
        "What is the fee to {v} a {o}?", "My {o} won't {v}, what now? ref {n}"]
VERBS = ["cancel", "track", "return", "change", "activate", "top up", "refund", "replace", "verify",
         "transfer", "freeze", "unlock", "upgrade", "renew", "close", "open", "pay for", "exchange"]
OBJECTS = ["card", "order", "account", "subscription", "parcel", "invoice", "password", "address",
           "delivery", "payment", "PIN", "voucher", "plan", "phone number", "transfer", "loan"]
DAYS = ["Monday", "Tuesday", "the weekend", "Black Friday", "my birthday", "last week"]


def synthetic_question(rng: random.Random) -> tuple[str, str]:
    verb, obj = rng.choice(VERBS), rng.choice(OBJECTS)
    text = rng.choice(ASKS).format(v=verb, o=obj, d=rng.choice(DAYS), n=rng.randint(1000, 99999))
    return text, f"{verb}_{obj}".replace(" ", "_")


def build_store(size: int, seed: int = 0) -> KnowledgeStore:
    rng = random.Random(seed)
    chunks = []
    for i in range(size):
        text, label = synthetic_question(rng)
        chunks.append(ChunkRecord(ROW, text, f"To {label.replace('_', ' ')}, see section {i}.", None,
                                  label, f"row-{i}"))
    store = KnowledgeStore(Path(tempfile.mkdtemp(prefix=f"bench-{size}-")), shared_embedder())
    store.add_document(new_document(f"synthetic-{size}.csv", f"{size:064d}", 0, chunks), chunks)
    return store


def measure(store: KnowledgeStore, queries: list[str]) -> tuple[float, float, float]:
    retriever = HybridRetriever(store)
    start = time.perf_counter()
    retriever.search("warm-up: build the BM25 index", k=5)
    index_s = time.perf_counter() - start
    for q in queries[:10]:
        retriever.search(q, k=5)
    times = []
    for q in queries:
        start = time.perf_counter()
        retriever.search(q, k=5)
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95)), index_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(99)
    queries = [synthetic_question(rng)[0] for _ in range(args.queries)]
    print(f"{'chunks':>8} {'build s':>8} {'bm25 s':>7} {'p50 ms':>7} {'p95 ms':>7}")
    for size in args.sizes:
        start = time.perf_counter()
        store = build_store(size)
        build_s = time.perf_counter() - start
        p50, p95, index_s = measure(store, queries)
        print(f"{size:>8} {build_s:>8.1f} {index_s:>7.2f} {1000 * p50:>7.1f} {1000 * p95:>7.1f}")


if __name__ == "__main__":
    main()
