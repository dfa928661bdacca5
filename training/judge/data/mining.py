"""Candidate retrieval for the builder, shaped like the product's retriever.

A ticket's candidates are the top-k distinct labels of a knowledge base, ranked as the product's
retriever ranks them (a label by the mean similarity of its best `votes` rows; retriever/hybrid.py),
each represented by its best-scoring row (one candidate per resolution, its similarity the one the
prompt shows). Rows whose text equals
the ticket's are never candidates (leave-one-out also drops exact duplicates), and a label can be
withheld so that the right answer is missing ("none of these" examples). Hard negatives for
pairwise examples are the same hits with another label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from training.splits import text_key
from training.datasets import Row

Embed = Callable[[list[str]], np.ndarray]
CHUNK = 512  # queries per matrix product: bounds memory at CHUNK x pool floats
HASHING_GRID_BITS = 10
"""hashing_embed's entries are multiples of 2**-10: dot products of two rows (|sum| < 2) are exact in float32."""


@dataclass(frozen=True)
class Hit:
    row: Row
    score: float


@dataclass(frozen=True)
class Search:
    hits: tuple[Hit, ...]
    """Best hit of the label the caller asked about (the ticket's own), even outside the top k."""
    wanted: Hit | None


class Pool:
    """The knowledge base of one split, with its unit vectors grouped by label."""

    def __init__(self, rows: Sequence[Row], vectors: np.ndarray, votes: int = 1):
        self.rows = list(rows)
        self.votes = votes
        self.labels = sorted({r.label for r in self.rows})
        index = {label: i for i, label in enumerate(self.labels)}
        label_ids = np.array([index[r.label] for r in self.rows], dtype=np.int64)
        self.order = np.argsort(label_ids, kind="stable")
        self.starts = np.searchsorted(label_ids[self.order], np.arange(len(self.labels)))
        self.ends = np.append(self.starts[1:], len(self.rows))
        self.vectors = vectors[self.order]
        self.label_index = index
        self.positions: dict[str, list[int]] = {}
        for pos, row_id in enumerate(self.order):
            self.positions.setdefault(text_key(self.rows[row_id].text), []).append(pos)

    def __len__(self) -> int:
        return len(self.rows)

    def search(
        self,
        queries: Sequence[str],
        vectors: np.ndarray,
        k: int,
        withhold: Sequence[str | None] | None = None,
        want: Sequence[str | None] | None = None,
    ) -> list[Search]:
        """Top-k labels for each query. `withhold[i]` is a label kept out of query i's hits;
        `want[i]` a label whose best row is reported apart."""
        results: list[Search] = []
        for start in range(0, len(queries), CHUNK):
            stop = min(start + CHUNK, len(queries))
            sims = vectors[start:stop] @ self.vectors.T
            for offset, query in enumerate(queries[start:stop]):
                for pos in self.positions.get(text_key(query), ()):
                    sims[offset, pos] = -np.inf  # never show a ticket its own text
            best = self._label_scores(sims)
            for offset in range(stop - start):
                i = start + offset
                results.append(
                    self._one(sims[offset], best[offset], k, _at(withhold, i), _at(want, i))
                )
        return results

    def _label_scores(self, sims: np.ndarray) -> np.ndarray:
        """[query, label]: the mean of each label's best `votes` similarities (fewer where it has
        fewer rows left); -inf where it has none."""
        if self.votes == 1:
            return np.maximum.reduceat(sims, self.starts, axis=1)
        scores = np.empty((sims.shape[0], len(self.labels)), dtype=np.float64)
        for j, (lo, hi) in enumerate(zip(self.starts, self.ends)):
            m = min(self.votes, hi - lo)
            top = -np.partition(-sims[:, lo:hi], m - 1, axis=1)[:, :m]
            finite = np.isfinite(top)
            total = np.where(finite, top, 0.0).sum(axis=1)
            scores[:, j] = np.where(finite.any(axis=1), total / np.maximum(finite.sum(axis=1), 1), -np.inf)
        return scores

    def _one(self, sims, best, k: int, withhold: str | None, want: str | None) -> Search:
        best = best.copy()
        if withhold in self.label_index:
            best[self.label_index[withhold]] = -np.inf
        # Stable sort on the negated scores: ties fall back to label order, so runs repeat exactly.
        ranked = [j for j in np.argsort(-best, kind="stable")[:k] if np.isfinite(best[j])]
        hits = tuple(self._hit(sims, j) for j in ranked)
        wanted = None
        if want in self.label_index and np.isfinite(best[self.label_index[want]]):
            wanted = self._hit(sims, self.label_index[want])
        return Search(hits, wanted)

    def _hit(self, sims, label_id: int) -> Hit:
        lo, hi = self.starts[label_id], self.ends[label_id]
        pos = lo + int(np.argmax(sims[lo:hi]))
        return Hit(self.rows[int(self.order[pos])], float(sims[pos]))


def _at(values, i):
    return None if values is None else values[i]


def embed_unique(texts: Sequence[str], embed: Embed) -> dict[str, np.ndarray]:
    """One vector per distinct normalised text, embedded once, in a fixed order."""
    keys = sorted({text_key(t) for t in texts})
    if not keys:
        return {}
    by_key = {}
    originals = {}
    for text in texts:
        originals.setdefault(text_key(text), text)
    matrix = embed([originals[k] for k in keys])
    for key, vector in zip(keys, matrix):
        by_key[key] = vector
    return by_key


def stack(texts: Sequence[str], vectors: dict[str, np.ndarray], dim: int) -> np.ndarray:
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([vectors[text_key(t)] for t in texts]).astype(np.float32)


def hashing_embed(texts: list[str], dim: int = 256) -> np.ndarray:
    """A dependency-free stand-in embedder: hashed bag of stemmed words, unit length.

    Deterministic across processes (crc32, not Python's salted hash) and across CPUs: bags of words
    tie often (equal cosines in exact arithmetic), and a float32 matrix product rounds differently
    with each BLAS kernel (AVX2 vs AVX-512), which flipped tied rankings and changed the examples
    built. So each entry is rounded to a multiple of 2**-GRID_BITS: every product is then a multiple
    of 2**-(2·GRID_BITS) and every partial sum fits float32's 24-bit mantissa exactly, in any order,
    and ties stay ties for the stable sort to break by label. For tests and quick dry runs; real
    builds use the product's sentence embedder."""
    import zlib

    from training.judge.rationale import stem, words

    out = np.zeros((len(texts), dim), dtype=np.float64)
    for i, text in enumerate(texts):
        for word in words(text):
            out[i, zlib.crc32(stem(word).encode("utf-8")) % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    unit = out / np.where(norms == 0, 1.0, norms)
    return (np.round(unit * 2**HASHING_GRID_BITS) / 2**HASHING_GRID_BITS).astype(np.float32)


class CachedEmbed:
    """Wraps an embed function with an on-disk cache (one .npz per embedder), so rebuilding the
    data after a rationale or balance change does not re-embed ~50,000 texts."""

    def __init__(self, embed: Embed, path):
        from pathlib import Path

        self.embed, self.path = embed, Path(path)
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as data:
                texts = str(data["texts"]).split("\x00")
                self.vectors = dict(zip(texts, data["vectors"]))

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.vectors})
        if missing:
            self.vectors.update(zip(missing, self.embed(missing)))
            self._save()
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        texts = sorted(self.vectors)
        temp = self.path.with_suffix(".tmp.npz")
        # One joined string, not an array of strings: numpy pads those to the longest text.
        np.savez(temp, texts=np.array("\x00".join(texts)), vectors=np.stack([self.vectors[t] for t in texts]))
        temp.replace(self.path)
