"""Hybrid search: dense (Chroma) + BM25 (bm25s), fused by reciprocal rank, one candidate per resolution.

The BM25 index is built once per store generation, kept on disk under the home folder and in
memory, so queries never rebuild it.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from retriever.candidates import Candidate
from retriever.chunks import candidate_from_metadata
from retriever.store import KnowledgeStore


@dataclass(frozen=True)
class RetrieverConfig:
    dense_pool: int = 50
    """Chunks taken from the dense index before fusion."""
    bm25_pool: int = 50
    """Chunks taken from BM25 before fusion; 0 turns BM25 off (plain dense search)."""
    rrf_k: float = 60.0
    """Reciprocal-rank-fusion constant: larger flattens the gap between ranks."""
    bm25_weight: float = 0.3
    """Weight of a BM25 rank against a dense rank in the fused score."""
    group_votes: int = 1
    """A resolution's fused score sums its best this-many chunks (labelled rows vote)."""


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
    def __init__(self, store: KnowledgeStore, config: RetrieverConfig = RetrieverConfig()):
        self.store, self.config = store, config
        self._bm25: Bm25Index | None = None

    def _bm25_index(self) -> Bm25Index | None:
        if self._bm25 is None or self._bm25.generation != self.store.generation:
            self._bm25 = Bm25Index.open(self.store)
        return self._bm25

    def search(self, ticket: str, k: int = 5) -> list[Candidate]:
        """The k best distinct resolutions for a ticket, best first."""
        if not ticket.strip() or self.store.count() == 0:
            return []
        query = self.store.embedder.embed([ticket])[0]
        dense = self.store.dense_search(query, self.config.dense_pool)
        fused = self._fuse(dense, self._bm25_ranking(ticket))
        chunks = {cid: (meta, score) for cid, meta, score in dense}
        chunks.update(self._fetch_missing(query, [c for c in fused if c not in chunks]))
        return self._group(fused, chunks)[:k]

    def _bm25_ranking(self, ticket: str) -> list[str]:
        if self.config.bm25_pool <= 0:
            return []
        index = self._bm25_index()
        return index.search(ticket, self.config.bm25_pool) if index else []

    def _fuse(self, dense: list, bm25_ids: list[str]) -> dict[str, float]:
        fused: dict[str, float] = defaultdict(float)
        for rank, (chunk_id, _, _) in enumerate(dense):
            fused[chunk_id] += 1.0 / (self.config.rrf_k + rank + 1)
        for rank, chunk_id in enumerate(bm25_ids):
            fused[chunk_id] += self.config.bm25_weight / (self.config.rrf_k + rank + 1)
        return fused

    def _fetch_missing(self, query: np.ndarray, chunk_ids: list[str]) -> dict:
        """BM25-only hits still need their metadata and true cosine similarity."""
        return {
            cid: (meta, float(vector @ query))
            for cid, (meta, vector) in self.store.get(chunk_ids).items()
        }

    def _group(self, fused: dict[str, float], chunks: dict) -> list[Candidate]:
        groups: dict[str, list[tuple[float, Candidate]]] = defaultdict(list)
        for chunk_id, rank_score in fused.items():
            meta, cosine = chunks[chunk_id]
            candidate = candidate_from_metadata(chunk_id, meta, cosine)
            groups[candidate.resolution_key].append((rank_score, candidate))
        best = []
        for members in groups.values():
            members.sort(key=lambda m: (m[0], m[1].score), reverse=True)
            votes = sum(score for score, _ in members[: self.config.group_votes])
            top = max(members, key=lambda m: m[1].score)[1]  # the closest row speaks for the group
            best.append(replace(top, rank_score=votes))
        return sorted(best, key=lambda c: (c.rank_score, c.score), reverse=True)
