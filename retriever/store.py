"""The knowledge store: one Chroma collection of chunks plus the registry of documents (registry.py).

This module owns the chunks' schema (metadata keys, collection names) and is the only writer of the
collection and the registry. A document's chunks are written first and the document is marked ready
last, so a failed or interrupted ingest never leaves chunks that the registry does not own.

The registry names the active Chroma collection (none named: the first one, "knowledge"), which
records the embedder that built it. A re-index (retriever/reindex.py) fills a new collection while
the old one keeps serving, then names it in one registry transaction; collections that are not
active are leftovers of an interrupted re-index and are dropped on open. Writes and re-indexing
are kept apart across processes by the home's locks (locks.py).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from retriever.candidates import Candidate
from retriever.embedder import Embedder
from retriever.locks import HomeLocks
from retriever.registry import DocumentRecord, Registry

COLLECTION = "knowledge"
"""The first collection of every home; the active one while `meta` names none (older homes)."""
EMBED_BATCH = 256

FAQ, PASSAGE, ROW = "faq", "passage", "row"


class StoreError(Exception):
    """The store cannot be used as asked (e.g. opened with another embedder)."""


@dataclass(frozen=True)
class EmbedderId:
    """Which embedder built a collection (None: a collection older than this record)."""

    name: str | None
    hash: str | None

    @classmethod
    def of(cls, embedder) -> "EmbedderId":
        return cls(embedder.name, embedder.hash)

    def __str__(self) -> str:
        return f"{self.name or 'unknown'} ({self.hash or 'no hash recorded'})"


@dataclass(frozen=True)
class ChunkRecord:
    """One searchable unit. For passages, `question` holds the passage text that is searched.

    `page` cites PDFs; `section` (the heading path, "Returns › Refund times") cites DOCX, HTML and Markdown.
    """

    kind: str
    question: str
    answer: str
    page: int | None = None
    label: str | None = None
    row_id: str | None = None
    section: str | None = None


ProgressFn = Callable[[int, int], None]

def _chunk_metadata(doc: DocumentRecord, chunk: ChunkRecord) -> dict:
    # Chroma metadata cannot hold None: absent values are left out.
    meta = {"doc_id": doc.id, "source": doc.name, "kind": chunk.kind, "question": chunk.question,
            "answer": chunk.answer}
    optional = {"page": chunk.page, "label": chunk.label, "row_id": chunk.row_id, "section": chunk.section}
    meta.update({k: v for k, v in optional.items() if v is not None})
    return meta


def candidate_from_metadata(chunk_id: str, meta: dict, score: float) -> Candidate:
    return Candidate(
        id=meta.get("row_id") or chunk_id,
        question=meta["question"],
        answer=meta["answer"],
        label=meta.get("label"),
        source=meta["source"],
        page=meta.get("page"),
        score=float(score),
        section=meta.get("section"),
    )


class KnowledgeStore:
    """Chroma collection + registry under one home folder.

    `check_embedder=False` opens a store built with another embedder anyway, for re-indexing: texts,
    metadata and the registry can be read and documents deleted, but searching and adding (which
    use vectors) raise StoreError until the store is re-indexed with this embedder.
    """

    def __init__(self, home: Path, embedder: Embedder, *, check_embedder: bool = True):
        import chromadb
        from chromadb.config import Settings

        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.registry = Registry(self.home / "registry.sqlite")
        self.locks = HomeLocks(self.home, StoreError)
        self._client = chromadb.PersistentClient(
            path=str(self.home / "chroma"), settings=Settings(anonymized_telemetry=False)
        )
        self.collection = self._open_collection(self._active_name())
        self._mismatch = self._embedder_mismatch()
        if self._mismatch and check_embedder:
            self.close()
            raise StoreError(self._mismatch)
        with self.locks.exclusive_if_idle() as idle:
            if idle:  # else a write or a re-index is running: what it left is not stale yet
                self.discard_leftovers()

    # -- collections ------------------------------------------------------------------------

    def _active_name(self) -> str:
        return self.registry.active_collection(COLLECTION)

    def _open_collection(self, name: str):
        # Embeddings are always computed here and passed in, so Chroma never needs (or
        # downloads) an embedding function of its own.
        if name == COLLECTION:
            return self._client.get_or_create_collection(
                name, embedding_function=None, metadata=self._collection_metadata(self.embedder)
            )
        from chromadb.errors import NotFoundError

        try:
            return self._client.get_collection(name, embedding_function=None)
        except NotFoundError:
            raise StoreError(
                f"the knowledge base in {self.home} names collection {name}, which is missing "
                f"from {self.home / 'chroma'}"
            ) from None

    @staticmethod
    def _collection_metadata(embedder) -> dict:
        return {"hnsw:space": "cosine", "embedder": embedder.name, "embedder_hash": embedder.hash}

    @property
    def built_with(self) -> EmbedderId:
        """The embedder that built the active collection."""
        meta = self.collection.metadata or {}
        return EmbedderId(meta.get("embedder"), meta.get("embedder_hash"))

    def _embedder_mismatch(self) -> str | None:
        """Why this store's vectors cannot be used with this embedder, or None."""
        built = self.built_with
        if built.hash in (None, self.embedder.hash):
            return None
        return (
            f"the knowledge base in {self.home} was built with embedder {built}, not "
            f"{EmbedderId.of(self.embedder)}; run `agent-helper reindex` to re-embed it with "
            f"{self.embedder.name}, or pass the embedder it was built with (--embedder)"
        )

    def _follow_active(self) -> None:
        """Switch to the active collection if another process re-indexed the store meanwhile."""
        name = self._active_name()
        if name != self.collection.name:
            self.collection = self._open_collection(name)
            self._mismatch = self._embedder_mismatch()

    def _texts(self):
        """The active collection, for reads and deletes that never touch vectors."""
        self._follow_active()
        return self.collection

    def _vectors(self):
        """The active collection, for searches and writes: only if this embedder built it."""
        self._follow_active()
        if self._mismatch:
            raise StoreError(self._mismatch)
        return self.collection

    def new_collection(self):
        """An empty collection for this store's embedder, not active yet (see `activate`)."""
        name = f"{COLLECTION}-{self.embedder.hash}-{secrets.token_hex(3)}"
        return self._client.create_collection(
            name, embedding_function=None, metadata=self._collection_metadata(self.embedder)
        )

    def activate(self, collection) -> None:
        """Make `collection` the active one, atomically, and drop the old one.

        One registry transaction names the new collection and bumps the generation (caches on the
        chunks key on it): a crash before it keeps the old collection, after it the new one. The
        old collection is dropped after the commit; if that is interrupted, the next open drops it.
        """
        old = self.collection
        self.registry.activate(collection.name)
        self.collection = collection
        self._mismatch = self._embedder_mismatch()
        self.drop_collection(old.name)

    def drop_collection(self, name: str) -> None:
        """Delete a collection that is not active (best effort: the next open retries)."""
        if name == self._active_name():
            raise StoreError(f"refusing to delete the active collection {name}")
        try:
            self._client.delete_collection(name)
        except Exception:  # already gone, or Chroma refused: a leftover for the next open
            pass

    # -- invariants -------------------------------------------------------------------------

    def discard_leftovers(self) -> None:
        """Remove what an interrupted ingest or re-index left behind.

        Only call while no write and no re-index runs (holding `write.lock` exclusively).
        """
        for doc_id in self.registry.unfinished():
            self._remove(doc_id)
        active = self._active_name()
        for collection in self._client.list_collections():
            name = collection.name
            if name != active and (name == COLLECTION or name.startswith(COLLECTION + "-")):
                self.drop_collection(name)

    def reindex_running(self) -> bool:
        return self.locks.reindex_running()

    def exclusive(self):
        """Hold the home for a re-index (locks.HomeLocks.exclusive)."""
        return self.locks.exclusive()

    # -- registry ---------------------------------------------------------------------------

    def documents(self) -> list[DocumentRecord]:
        return self.registry.documents()

    def find(self, *, doc_id: str | None = None, sha256: str | None = None) -> DocumentRecord | None:
        return self.registry.find(doc_id=doc_id, sha256=sha256)

    @property
    def generation(self) -> int:
        """Grows with every change of content; caches built on the chunks key on it."""
        return self.registry.generation

    # -- writes -----------------------------------------------------------------------------

    def add_document(
        self, doc: DocumentRecord, chunks: Sequence[ChunkRecord], progress: ProgressFn | None = None
    ) -> None:
        """Embed and store all chunks of a document, or none of them."""
        with self.locks.writing():
            self._add_document(doc, chunks, progress)

    def _add_document(
        self, doc: DocumentRecord, chunks: Sequence[ChunkRecord], progress: ProgressFn | None
    ) -> None:
        collection = self._vectors()
        self.registry.begin(doc)
        try:
            for start in range(0, len(chunks), EMBED_BATCH):
                batch = chunks[start : start + EMBED_BATCH]
                collection.add(
                    ids=[f"{doc.id}:{start + i:06d}" for i in range(len(batch))],
                    embeddings=self.embedder.embed([c.question for c in batch]),
                    documents=[c.question for c in batch],
                    metadatas=[_chunk_metadata(doc, c) for c in batch],
                )
                if progress:
                    progress(min(start + EMBED_BATCH, len(chunks)), len(chunks))
        except BaseException:
            self._remove(doc.id)
            raise
        self.registry.ready(doc.id)

    def delete_document(self, doc_id: str) -> DocumentRecord:
        with self.locks.writing():
            doc = self.find(doc_id=doc_id)
            if doc is None:
                raise KeyError(doc_id)
            self._remove(doc_id)
            return doc

    def _remove(self, doc_id: str) -> None:
        self._texts().delete(where={"doc_id": doc_id})
        self.registry.forget(doc_id)

    # -- reads ------------------------------------------------------------------------------

    def count(self) -> int:
        return self._texts().count()

    def dense_search(self, query_vector: np.ndarray, n: int) -> list[tuple[str, dict, float]]:
        """(chunk id, metadata, cosine similarity) for the n nearest chunks."""
        collection = self._vectors()
        total = collection.count()
        if total == 0:
            return []
        result = collection.query(
            query_embeddings=[query_vector], n_results=min(n, total),
            include=["metadatas", "distances"],
        )
        return [
            (chunk_id, meta, 1.0 - dist)
            for chunk_id, meta, dist in zip(
                result["ids"][0], result["metadatas"][0], result["distances"][0]
            )
        ]

    def get(self, chunk_ids: list[str]) -> dict[str, tuple[dict, np.ndarray]]:
        """Metadata and stored vector of the given chunks."""
        if not chunk_ids:
            return {}
        got = self._vectors().get(ids=chunk_ids, include=["metadatas", "embeddings"])
        return {
            chunk_id: (meta, np.asarray(vector, dtype=np.float32))
            for chunk_id, meta, vector in zip(got["ids"], got["metadatas"], got["embeddings"])
        }

    def iter_texts(self, page_size: int = 5000) -> Iterator[tuple[str, str]]:
        """(chunk id, searched text) for every chunk, in pages so memory stays flat."""
        for page in self._pages(page_size, ["documents"]):
            yield from zip(page["ids"], page["documents"])

    def iter_chunks(self, page_size: int = 5000) -> Iterator[list[tuple[str, str, dict]]]:
        """Pages of (chunk id, searched text, metadata): everything but the vectors."""
        for page in self._pages(page_size, ["documents", "metadatas"]):
            yield list(zip(page["ids"], page["documents"], page["metadatas"]))

    def iter_vectors(self, page_size: int = 5000) -> Iterator[tuple[str, dict, np.ndarray]]:
        """(chunk id, metadata, stored vector) for every chunk, read a page at a time."""
        self._vectors()  # StoreError where another embedder made them
        for page in self._pages(page_size, ["metadatas", "embeddings"]):
            for chunk_id, meta, vector in zip(page["ids"], page["metadatas"], page["embeddings"]):
                yield chunk_id, meta, np.asarray(vector, dtype=np.float32)

    def _pages(self, page_size: int, include: list[str]) -> Iterator[dict]:
        collection, offset = self._texts(), 0
        while True:
            got = collection.get(limit=page_size, offset=offset, include=include)
            if not got["ids"]:
                return
            yield got
            offset += len(got["ids"])

    def close(self) -> None:
        self.registry.close()


def new_document(
    name: str, sha256: str, pages: int, chunks: Sequence[ChunkRecord], ocr_pages: Sequence[int] = ()
) -> DocumentRecord:
    kinds = [c.kind for c in chunks]
    return DocumentRecord(
        id=sha256[:16], name=name, sha256=sha256, pages=pages, chunks=len(chunks),
        faq_pairs=kinds.count(FAQ), passages=kinds.count(PASSAGE), rows=kinds.count(ROW),
        added_at=time.time(), ocr_pages=page_ranges(ocr_pages),
    )


def page_ranges(numbers: Sequence[int]) -> str:
    """ "2-5, 7" for pages 2, 3, 4, 5 and 7: short enough for a table cell even on a 500-page scan."""
    spans: list[list[int]] = []
    for number in sorted(set(numbers)):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)
