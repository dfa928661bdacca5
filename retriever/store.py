"""The knowledge store: one Chroma collection of chunks plus a SQLite registry of documents.

This module owns the store's schema (chunk metadata keys, registry columns, collection names) and
is the only writer of both. A document's chunks are written first and the document is marked ready
last, so a failed or interrupted ingest never leaves chunks that the registry does not own.

The registry's `meta` table names the active Chroma collection (no entry: the first one,
"knowledge"), which records the embedder that built it. A re-index (retriever/reindex.py) fills a
new collection while the old one keeps serving, then points `meta` at it in one SQLite transaction;
collections that are not active are leftovers of an interrupted re-index and are dropped on open.

Two lock files in the home keep writes and re-indexing apart, across processes (fcntl.flock, so a
killed process never leaves a lock behind): writers share `write.lock`; a re-index holds
`reindex.lock` and `write.lock` exclusively. Reads take no lock.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from retriever.candidates import Candidate
from retriever.embedder import Embedder

COLLECTION = "knowledge"
"""The first collection of every home; the active one while `meta` names none (older homes)."""
ACTIVE_COLLECTION_KEY = "collection"
"""`meta` key naming the active collection."""
WRITE_LOCK, REINDEX_LOCK = "write.lock", "reindex.lock"
EMBED_BATCH = 256
LOCK_WAIT_S = 60.0
"""How long a write waits for a brief exclusive hold (another process's clean-up on open)."""

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
        self._db = sqlite3.connect(self.home / "registry.sqlite", check_same_thread=False)
        self._db.executescript(_REGISTRY_SCHEMA)
        self._client = chromadb.PersistentClient(
            path=str(self.home / "chroma"), settings=Settings(anonymized_telemetry=False)
        )
        self.collection = self._open_collection(self._active_name())
        self._mismatch = self._embedder_mismatch()
        if self._mismatch and check_embedder:
            self.close()
            raise StoreError(self._mismatch)
        with self._exclusive_if_idle() as idle:
            if idle:  # else a write or a re-index is running: what it left is not stale yet
                self.discard_leftovers()

    # -- collections ------------------------------------------------------------------------

    def _active_name(self) -> str:
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (ACTIVE_COLLECTION_KEY,)
        ).fetchone()
        return row[0] if row else COLLECTION

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

        One SQLite transaction names the new collection and bumps the generation (caches on the
        chunks key on it): a crash before it keeps the old collection, after it the new one. The
        old collection is dropped after the commit; if that is interrupted, the next open drops it.
        """
        old = self.collection
        with self._db:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (ACTIVE_COLLECTION_KEY, collection.name),
            )
            self._bump_generation()
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
        rows = self._db.execute("SELECT id FROM documents WHERE status != 'ready'").fetchall()
        for (doc_id,) in rows:
            self._remove(doc_id)
        active = self._active_name()
        for collection in self._client.list_collections():
            name = collection.name
            if name != active and (name == COLLECTION or name.startswith(COLLECTION + "-")):
                self.drop_collection(name)

    # -- locks ------------------------------------------------------------------------------

    def _lock_fd(self, name: str, mode: int) -> int | None:
        """A descriptor holding flock `mode` on home/name, or None if another holder is in the way.

        Each hold opens its own descriptor: flock conflicts between descriptors even within one
        process, so two stores (or threads) of one process exclude each other too.
        """
        fd = os.open(self.home / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            return None

    def reindex_running(self) -> bool:
        fd = self._lock_fd(REINDEX_LOCK, fcntl.LOCK_EX)
        if fd is None:
            return True
        os.close(fd)
        return False

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Shared hold for adding or deleting documents; refused while a re-index runs."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while (fd := self._lock_fd(WRITE_LOCK, fcntl.LOCK_SH)) is None:
            if self.reindex_running():
                raise StoreError(
                    f"a re-index is running in {self.home}; add or delete documents when it is done"
                )
            if time.monotonic() > deadline:
                raise StoreError(f"the knowledge base in {self.home} stayed busy; try again")
            time.sleep(0.05)  # another process's clean-up on open: brief
        try:
            yield
        finally:
            os.close(fd)

    @contextmanager
    def _exclusive_if_idle(self) -> Iterator[bool]:
        fd = self._lock_fd(WRITE_LOCK, fcntl.LOCK_EX)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the home for a re-index: no other re-index, no document added or deleted."""
        reindex_fd = self._lock_fd(REINDEX_LOCK, fcntl.LOCK_EX)
        if reindex_fd is None:
            raise StoreError(f"a re-index is already running in {self.home}")
        try:
            write_fd = self._lock_fd(WRITE_LOCK, fcntl.LOCK_EX)
            if write_fd is None:
                raise StoreError(
                    f"documents are being added or deleted in {self.home}; re-index when that is done"
                )
            try:
                yield
            finally:
                os.close(write_fd)
        finally:
            os.close(reindex_fd)

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
        with self._writing():
            self._add_document(doc, chunks, progress)

    def _add_document(
        self, doc: DocumentRecord, chunks: Sequence[ChunkRecord], progress: ProgressFn | None
    ) -> None:
        collection = self._vectors()
        values = asdict(doc) | {"status": "ingesting"}
        with self._db:
            self._db.execute(
                f"INSERT INTO documents({_DOC_COLUMNS}, status) VALUES (?,?,?,?,?,?,?,?,?,?)",
                tuple(values.values()),
            )
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
        with self._db:
            self._db.execute("UPDATE documents SET status = 'ready' WHERE id = ?", (doc.id,))
            self._bump_generation()

    def delete_document(self, doc_id: str) -> DocumentRecord:
        with self._writing():
            doc = self.find(doc_id=doc_id)
            if doc is None:
                raise KeyError(doc_id)
            self._remove(doc_id)
            return doc

    def _remove(self, doc_id: str) -> None:
        self._texts().delete(where={"doc_id": doc_id})
        with self._db:
            self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
            self._bump_generation()

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

    def _pages(self, page_size: int, include: list[str]) -> Iterator[dict]:
        collection, offset = self._texts(), 0
        while True:
            got = collection.get(limit=page_size, offset=offset, include=include)
            if not got["ids"]:
                return
            yield got
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
