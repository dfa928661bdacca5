"""Re-embed every chunk with another embedder, without losing a chunk or a moment of service.

The store's active collection keeps answering searches while a new collection is filled with the
same ids, texts and metadata, embedded by the new embedder; only a complete copy is swapped in
(one registry write, `KnowledgeStore.activate`). Killed at any point, the old collection stays
active and intact, and the half-built one is dropped on the next open or re-index (on a Chroma
server: the next re-index). The old vectors are never read, so a store built with any embedder
can be re-indexed.

    store = KnowledgeStore(home, new_embedder, check_embedder=False)
    result = reindex(store, progress=lambda done, total: ...)
    print(result.message())
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from retriever.store import EMBED_BATCH, EmbedderId, KnowledgeStore, ProgressFn, StoreError

REINDEXED, UP_TO_DATE, EMPTY = "reindexed", "up to date", "empty"


@dataclass(frozen=True)
class ReindexResult:
    status: str
    """REINDEXED, UP_TO_DATE (already built with this embedder, nothing done) or EMPTY."""
    chunks: int
    """Chunks re-embedded (0 unless REINDEXED)."""
    old: EmbedderId
    """The embedder that had built the store."""
    new: EmbedderId
    """The embedder the store is built with now."""
    seconds: float
    where: str
    """Where the knowledge base is, as messages say it (KnowledgeStore.where: "in HOME" or "on the
    Chroma server at URL")."""

    def message(self) -> str:
        if self.status == UP_TO_DATE:
            return (f"the knowledge base {self.where} is already built with embedder {self.new}; "
                    "nothing to do (--force re-embeds it anyway)")
        if self.status == EMPTY:
            return (f"the knowledge base {self.where} is empty: nothing to re-embed "
                    f"(it now uses embedder {self.new})")
        return (f"re-embedded {self.chunks} chunks: {self.old} → {self.new} "
                f"in {self.seconds:.1f} s")


def reindex(
    store: KnowledgeStore,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    batch_size: int = EMBED_BATCH,
) -> ReindexResult:
    """Rebuild `store`'s collection with `store.embedder`; StoreError if writes or another re-index
    are running. `progress(done, total)` is called after each batch is written."""
    started = time.perf_counter()
    with store.exclusive():
        store.discard_leftovers()  # our lock proves nothing else is building or ingesting
        old, new = store.built_with, EmbedderId.of(store.embedder)
        total = store.count()
        if old.hash == new.hash and not force:
            status = EMPTY if total == 0 else UP_TO_DATE
            return ReindexResult(status, 0, old, new, time.perf_counter() - started, store.where)
        done = _rebuild(store, total, progress, batch_size)
    status = REINDEXED if total else EMPTY
    return ReindexResult(status, done, old, new, time.perf_counter() - started, store.where)


def _rebuild(store: KnowledgeStore, total: int, progress: ProgressFn | None, batch_size: int) -> int:
    """Copy every chunk into a new collection, re-embedded, and swap it in; the chunks copied."""
    generation = store.generation
    target = store.new_collection()
    try:
        done = 0
        for page in store.iter_chunks(page_size=batch_size):
            ids, texts, metadatas = (list(column) for column in zip(*page))
            target.add(ids=ids, embeddings=store.embedder.embed(texts), documents=texts,
                       metadatas=metadatas)
            done += len(ids)
            if progress:
                progress(done, total)
        # Writes are locked out, so a difference means the copy went wrong: never swap it in.
        if done != total or target.count() != total:
            raise StoreError(
                f"re-index copied {done} of {total} chunks ({target.count()} stored); "
                "the old collection stays active"
            )
        # Server mode: processes of other homes are not locked out; swapping in a copy that misses
        # their latest documents would lose them.
        if store.generation != generation:
            raise StoreError("documents were added or deleted during the re-index (by another process); "
                             "the old collection stays active: run it again")
        store.activate(target)
    except BaseException:
        store.drop_collection(target.name)
        raise
    return done
