"""The knowledge store: one Chroma collection of chunks plus a SQLite registry of documents.

This module owns the store's schema (chunk metadata keys, registry columns) and is the only
writer of both. A document's chunks are written first and the document is marked ready last, so
a failed or interrupted ingest never leaves chunks that the registry does not own.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from retriever.candidates import Candidate
from retriever.embedder import Embedder

COLLECTION = "knowledge"
EMBED_BATCH = 256

FAQ, PASSAGE, ROW = "faq", "passage", "row"


class StoreError(Exception):
    """The store cannot be used as asked (e.g. opened with another embedder)."""


@dataclass(frozen=True)
class ChunkRecord:
    """One searchable unit. For passages, `question` holds the passage text that is searched."""

    kind: str
    question: str
    answer: str
    page: int | None = None
    label: str | None = None
    row_id: str | None = None


@dataclass(frozen=True)
class DocumentRecord:
    id: str
    name: str
    sha256: str
    pages: int
    chunks: int
    faq_pairs: int
    passages: int
    rows: int
    added_at: float


ProgressFn = Callable[[int, int], None]

_REGISTRY_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE,
    pages INTEGER NOT NULL, chunks INTEGER NOT NULL, faq_pairs INTEGER NOT NULL,
    passages INTEGER NOT NULL, rows INTEGER NOT NULL, added_at REAL NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_DOC_COLUMNS = "id, name, sha256, pages, chunks, faq_pairs, passages, rows, added_at"


def _chunk_metadata(doc: DocumentRecord, chunk: ChunkRecord) -> dict:
    # Chroma metadata cannot hold None: absent values are left out.
    meta = {"doc_id": doc.id, "source": doc.name, "kind": chunk.kind, "question": chunk.question,
            "answer": chunk.answer}
    optional = {"page": chunk.page, "label": chunk.label, "row_id": chunk.row_id}
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
    )


class KnowledgeStore:
    """Chroma collection + registry under one home folder."""

    def __init__(self, home: Path, embedder: Embedder):
        import chromadb
        from chromadb.config import Settings

        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self._db = sqlite3.connect(self.home / "registry.sqlite", check_same_thread=False)
        self._db.executescript(_REGISTRY_SCHEMA)
        client = chromadb.PersistentClient(
            path=str(self.home / "chroma"), settings=Settings(anonymized_telemetry=False)
        )
        # Embeddings are always computed here and passed in, so Chroma never needs (or
        # downloads) an embedding function of its own.
        self.collection = client.get_or_create_collection(
            COLLECTION,
            embedding_function=None,
            metadata={"hnsw:space": "cosine", "embedder": embedder.name,
                      "embedder_hash": embedder.hash},
        )
        self._check_embedder()
        self._discard_unfinished()

    # -- invariants -------------------------------------------------------------------------

    def _check_embedder(self) -> None:
        meta = self.collection.metadata or {}
        if meta.get("embedder_hash") not in (None, self.embedder.hash):
            raise StoreError(
                f"the knowledge base in {self.home} was built with embedder "
                f"{meta.get('embedder')} ({meta.get('embedder_hash')}), not "
                f"{self.embedder.name} ({self.embedder.hash}); run `agent-helper reindex` "
                "or use the embedder it was built with"
            )

    def _discard_unfinished(self) -> None:
        """Remove what an interrupted ingest left behind."""
        rows = self._db.execute("SELECT id FROM documents WHERE status != 'ready'").fetchall()
        for (doc_id,) in rows:
            self._remove(doc_id)

    # -- registry ---------------------------------------------------------------------------

    def documents(self) -> list[DocumentRecord]:
        rows = self._db.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE status = 'ready' ORDER BY added_at"
        ).fetchall()
        return [DocumentRecord(*row) for row in rows]

    def find(self, *, doc_id: str | None = None, sha256: str | None = None) -> DocumentRecord | None:
        column, value = ("id", doc_id) if doc_id is not None else ("sha256", sha256)
        row = self._db.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE {column} = ? AND status = 'ready'",
            (value,),
        ).fetchone()
        return DocumentRecord(*row) if row else None

    @property
    def generation(self) -> int:
        """Grows with every change of content; caches built on the chunks key on it."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _bump_generation(self) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES('generation', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(self.generation + 1),),
        )

    # -- writes -----------------------------------------------------------------------------

    def add_document(
        self, doc: DocumentRecord, chunks: Sequence[ChunkRecord], progress: ProgressFn | None = None
    ) -> None:
        """Embed and store all chunks of a document, or none of them."""
        values = asdict(doc) | {"status": "ingesting"}
        with self._db:
            self._db.execute(
                f"INSERT INTO documents({_DOC_COLUMNS}, status) VALUES (?,?,?,?,?,?,?,?,?,?)",
                tuple(values.values()),
            )
        try:
            for start in range(0, len(chunks), EMBED_BATCH):
                batch = chunks[start : start + EMBED_BATCH]
                self.collection.add(
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
        with self._db:
            self._db.execute("UPDATE documents SET status = 'ready' WHERE id = ?", (doc.id,))
            self._bump_generation()

    def delete_document(self, doc_id: str) -> DocumentRecord:
        doc = self.find(doc_id=doc_id)
        if doc is None:
            raise KeyError(doc_id)
        self._remove(doc_id)
        return doc

    def _remove(self, doc_id: str) -> None:
        self.collection.delete(where={"doc_id": doc_id})
        with self._db:
            self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
            self._bump_generation()

    # -- reads ------------------------------------------------------------------------------

    def count(self) -> int:
        return self.collection.count()

    def dense_search(self, query_vector: np.ndarray, n: int) -> list[tuple[str, dict, float]]:
        """(chunk id, metadata, cosine similarity) for the n nearest chunks."""
        if self.count() == 0:
            return []
        result = self.collection.query(
            query_embeddings=[query_vector], n_results=min(n, self.count()),
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
        got = self.collection.get(ids=chunk_ids, include=["metadatas", "embeddings"])
        return {
            chunk_id: (meta, np.asarray(vector, dtype=np.float32))
            for chunk_id, meta, vector in zip(got["ids"], got["metadatas"], got["embeddings"])
        }

    def iter_texts(self, page_size: int = 5000) -> Iterator[tuple[str, str]]:
        """(chunk id, searched text) for every chunk, in pages so memory stays flat."""
        offset = 0
        while True:
            got = self.collection.get(limit=page_size, offset=offset, include=["documents"])
            if not got["ids"]:
                return
            yield from zip(got["ids"], got["documents"])
            offset += len(got["ids"])

    def close(self) -> None:
        self._db.close()


def new_document(name: str, sha256: str, pages: int, chunks: Sequence[ChunkRecord]) -> DocumentRecord:
    kinds = [c.kind for c in chunks]
    return DocumentRecord(
        id=sha256[:16], name=name, sha256=sha256, pages=pages, chunks=len(chunks),
        faq_pairs=kinds.count(FAQ), passages=kinds.count(PASSAGE), rows=kinds.count(ROW),
        added_at=time.time(),
    )
