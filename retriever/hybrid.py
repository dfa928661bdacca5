"""Hybrid search: dense (Chroma) and BM25 (bm25s) find the rows, label voting ranks the resolutions.

The candidate pool is the dense index's nearest rows plus BM25's best keyword hits (their cosine
similarity computed too). Each resolution (a label, or one FAQ) is then scored by the mean cosine of
its best `label_votes` rows in the pool: a ticket close to several past tickets of one resolution
beats a single lucky neighbour of another. Measured on held-out tickets (README, "Quality"): +1.0
point on CLINC150, +3.4 on HINT3 and +0.5 on Banking77 over the best single row, no change on FAQs
(one row each); fusing BM25's rank into the order instead cost 7.7 points on FAQ-style knowledge.

An optional cross-encoder (retriever/reranker.py) then reorders the best `rerank_pool` resolutions.

The BM25 index is built once per store generation, kept on disk under the home folder and in
memory, so queries never rebuild it.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retriever.candidates import Candidate
from retriever.chunks import candidate_from_metadata
from retriever.escalation import KnowledgeFloor, derive_floor
from retriever.store import KnowledgeStore

if TYPE_CHECKING:
    from retriever.reranker import Reranker


@dataclass(frozen=True)
class RetrieverConfig:
    dense_pool: int = 50
    """Rows taken from the dense index."""
    bm25_pool: int = 50
    """Rows BM25 adds to the pool (keyword hits the embedder missed); 0 = dense rows only."""
    label_votes: int = 3
    """A resolution's score is the mean cosine similarity of its best this-many rows in the pool
    (fewer when it has fewer); 1 = its best row alone."""
    rerank_pool: int = 20
    """Resolutions the reranker (when there is one) reads and reorders; the top k of its order
    are returned."""


class Bm25Index:
    """bm25s over every chunk's searched text, persisted per store generation."""

    def __init__(self, folder: Path, generation: int, ids: list[str], model):
        self.folder, self.generation, self.ids, self.model = folder, generation, ids, model

    @classmethod
    def open(cls, store: KnowledgeStore) -> "Bm25Index | None":
        import bm25s

        folder = store.home / "bm25" / f"gen-{store.generation}"
        if (folder / "ids.txt").exists():
            ids = (folder / "ids.txt").read_text(encoding="utf-8").split("\n")
            return cls(folder, store.generation, ids, bm25s.BM25.load(str(folder)))
        pairs = list(store.iter_texts())
        if not pairs:
            return None
        ids, texts = [p[0] for p in pairs], [p[1] for p in pairs]
        model = bm25s.BM25()
        model.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        cls._save(store.home / "bm25", folder, ids, model)
        return cls(folder, store.generation, ids, model)

    @staticmethod
    def _save(root: Path, folder: Path, ids: list[str], model) -> None:
        shutil.rmtree(root, ignore_errors=True)  # older generations are stale
        folder.mkdir(parents=True)
        model.save(str(folder))
        (folder / "ids.txt").write_text("\n".join(ids), encoding="utf-8")

    def search(self, text: str, n: int) -> list[str]:
        import bm25s

        tokens = bm25s.tokenize([text], stopwords="en", show_progress=False)
        if not tokens.ids[0]:
            return []
        n = min(n, len(self.ids))
        hits, scores = self.model.retrieve(tokens, k=n, show_progress=False, n_threads=1)
        return [self.ids[i] for i, s in zip(hits[0], scores[0]) if s > 0]


class HybridRetriever:
    def __init__(self, store: KnowledgeStore, config: RetrieverConfig = RetrieverConfig(),
                 reranker: "Reranker | None" = None):
        self.store, self.config, self.reranker = store, config, reranker
        self._bm25: Bm25Index | None = None
        self._floor: tuple[int, KnowledgeFloor] | None = None

    def knowledge_floor(self) -> KnowledgeFloor:
        """The knowledge base's own escalation floor (retriever/escalation.py), derived once per
        store generation."""
        if self._floor is None or self._floor[0] != self.store.generation:
            generation = self.store.generation
            rows = ((candidate_from_metadata(cid, meta, 0.0).resolution_key, vector)
                    for cid, meta, vector in self.store.iter_vectors())
            self._floor = (generation, derive_floor(rows))
        return self._floor[1]

    def _bm25_index(self) -> Bm25Index | None:
        if self._bm25 is None or self._bm25.generation != self.store.generation:
            self._bm25 = Bm25Index.open(self.store)
        return self._bm25

    def search(self, ticket: str, k: int = 5, rerank: bool = True) -> list[Candidate]:
        """The k best distinct resolutions for a ticket, best first: `rank_score` is the label vote,
        `score` the cosine similarity of the resolution's closest row; with a reranker (and `rerank`),
        the order is its fused score and `rerank_score` its calibrated probability."""
        if not ticket.strip() or self.store.count() == 0:
            return []
        query = self.store.embedder.embed([ticket])[0]
        chunks = {cid: (meta, score) for cid, meta, score in self.store.dense_search(query, self.config.dense_pool)}
        extra = [cid for cid in self._bm25_ranking(ticket) if cid not in chunks]
        chunks.update(self._fetch_missing(query, extra))
        if self.reranker is None or not rerank:
            return self._group(chunks)[:k]
        pool = self._group(chunks)[: max(k, self.config.rerank_pool)]
        return self.reranker.rerank(ticket, pool)[:k]

    def _bm25_ranking(self, ticket: str) -> list[str]:
        if self.config.bm25_pool <= 0:
            return []
        index = self._bm25_index()
        return index.search(ticket, self.config.bm25_pool) if index else []

    def _fetch_missing(self, query: np.ndarray, chunk_ids: list[str]) -> dict:
        """BM25-only hits still need their metadata and true cosine similarity."""
        return {
            cid: (meta, float(vector @ query))
            for cid, (meta, vector) in self.store.get(chunk_ids).items()
        }

    def _group(self, chunks: dict) -> list[Candidate]:
        groups: dict[str, list[Candidate]] = defaultdict(list)
        for chunk_id, (meta, cosine) in chunks.items():
            candidate = candidate_from_metadata(chunk_id, meta, cosine)
            groups[candidate.resolution_key].append(candidate)
        best = []
        for members in groups.values():
            members.sort(key=lambda c: c.score, reverse=True)
            votes = members[: self.config.label_votes]
            best.append(replace(members[0], rank_score=sum(c.score for c in votes) / len(votes)))
        return sorted(best, key=lambda c: (c.rank_score, c.score), reverse=True)
