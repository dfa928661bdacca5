"""The knowledge store: one Chroma collection of chunks plus the registry of documents (registry.py).

Chroma is embedded under the home folder, or a server shared by many processes (`ChromaServer`,
chroma_client.py); the registry lives beside it (SQLite under the home, or a collection on the
server: chroma_registry.py). Everything below holds in both, except where "server mode" says.

This module owns the collection names (the chunks' schema: chunks.py) and is the only writer of the
collection and the registry. A document's chunks are written first and the document is marked ready
last, so a failed or interrupted ingest never leaves chunks that the registry does not own.

The registry names the active Chroma collection (none named: the first one, "knowledge"), which
records the embedder that built it. A re-index (retriever/reindex.py) fills a new collection while
the old one keeps serving, then names it in one registry transaction; collections that are not
active are leftovers of an interrupted re-index and are dropped on open. Writes and re-indexing
are kept apart across processes by the home's locks (locks.py).

Server mode: the home's locks only see the processes of that home, so what other homes are doing
cannot be told from a leftover. On open only ingests begun over STALE_INGEST_S ago are removed (a
re-ingest of the same file replaces its own leftover at once), and other collections are dropped
only by a re-index. Instead of the locks, a document is marked ready only once the server holds
exactly its chunks, and a re-index is not swapped in if documents changed while it copied.
"""

from __future__ import annotations

import functools
import secrets
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from retriever.chroma_client import ChromaServer, embedded_client
from retriever.chroma_registry import ChromaRegistry
from retriever.chunks import ChunkRecord, chunk_metadata
from retriever.embedder import Embedder
from retriever.locks import HomeLocks
from retriever.registry import DocumentRecord, DocumentRegistry, SqliteRegistry

COLLECTION = "knowledge"
"""The first collection of every home; the active one while `meta` names none (older homes)."""
EMBED_BATCH = 256
STALE_INGEST_S = 3600.0
"""Server mode: an ingest begun this long ago and not finished was cut off (its process or the
server died) and is removed on open; younger ones may belong to another home's running ingest."""


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


ProgressFn = Callable[[int, int], None]


def _talks_to_chroma(method):
    """A server that is down or restarting makes the method raise one StoreError naming its URL."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._reachable():
            return method(self, *args, **kwargs)

    return call


class KnowledgeStore:
    """Chroma collection + registry under one home folder, or on a Chroma server (`server`).

    `check_embedder=False` opens a store built with another embedder anyway, for re-indexing: texts,
    metadata and the registry can be read and documents deleted, but searching and adding (which
    use vectors) raise StoreError until the store is re-indexed with this embedder.

    With a `server`, the home keeps only this process's locks and BM25 index; a server that cannot
    be reached raises StoreError naming its URL, from here and from every method.
    """

    def __init__(self, home: Path, embedder: Embedder, *, check_embedder: bool = True,
                 server: ChromaServer | None = None):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.embedder, self.server = embedder, server
        self.locks = HomeLocks(self.home, StoreError)
        self._client, self.registry = self._connect()
        with self._reachable():
            self.collection = self._open_collection(self._active_name())
        self._mismatch = self._embedder_mismatch()
        if self._mismatch and check_embedder:
            self.close()
            raise StoreError(self._mismatch)
        with self.locks.exclusive_if_idle() as idle:
            if idle:  # else a write or a re-index is running: what it left is not stale yet
                self.discard_leftovers(collections=server is None)

    def _connect(self) -> tuple[object, DocumentRegistry]:
        if self.server is None:
            return embedded_client(self.home), SqliteRegistry(self.home / "registry.sqlite")
        client = self.server.connect(StoreError)
        with self._reachable():
            return client, ChromaRegistry(client)

    def _reachable(self):
        """Server mode: network failures inside become one StoreError naming the server's URL."""
        return self.server.reachable(StoreError) if self.server is not None else nullcontext()

    @property
    def where(self) -> str:
        """Where the knowledge base is, as messages say it: "in HOME" or "on the Chroma server at URL"."""
        return f"on the Chroma server at {self.server}" if self.server is not None else f"in {self.home}"

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
            missing_from = "" if self.server is not None else f" from {self.home / 'chroma'}"
            raise StoreError(
                f"the knowledge base {self.where} names collection {name}, which is missing{missing_from}"
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
            f"the knowledge base {self.where} was built with embedder {built}, not "
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

    @_talks_to_chroma
    def new_collection(self):
        """An empty collection for this store's embedder, not active yet (see `activate`)."""
        name = f"{COLLECTION}-{self.embedder.hash}-{secrets.token_hex(3)}"
        return self._client.create_collection(
            name, embedding_function=None, metadata=self._collection_metadata(self.embedder)
        )

    @_talks_to_chroma
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

    @_talks_to_chroma
    def drop_collection(self, name: str) -> None:
        """Delete a collection that is not active (best effort: the next open retries)."""
        if name == self._active_name():
            raise StoreError(f"refusing to delete the active collection {name}")
        try:
            self._client.delete_collection(name)
        except Exception:  # already gone, or Chroma refused: a leftover for the next open
            pass

    # -- invariants -------------------------------------------------------------------------

    @_talks_to_chroma
    def discard_leftovers(self, *, collections: bool = True) -> None:
        """Remove what an interrupted ingest or re-index left behind: unfinished documents (server
        mode: begun over STALE_INGEST_S ago) and, with `collections`, collections not active.

        Only call while no write and no re-index of this home runs (holding `write.lock` exclusively).
        """
        begun_before = time.time() - STALE_INGEST_S if self.server is not None else None
        for doc_id in self.registry.unfinished(begun_before):
            self._remove(doc_id)
        if not collections:
            return
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

    @_talks_to_chroma
    def documents(self) -> list[DocumentRecord]:
        return self.registry.documents()

    @_talks_to_chroma
    def find(self, *, doc_id: str | None = None, sha256: str | None = None) -> DocumentRecord | None:
        return self.registry.find(doc_id=doc_id, sha256=sha256)

    @property
    @_talks_to_chroma
    def generation(self) -> int:
        """Changes with every change of content (embedded: grows; server mode: a fingerprint of the
        registry, so other processes' changes count too); caches built on the chunks key on it."""
        return self.registry.generation

    # -- writes -----------------------------------------------------------------------------

    @_talks_to_chroma
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
                # upsert: chunk ids derive from the file's bytes, so an ingest of the same file
                # that the server cut off is overwritten, not kept beside.
                collection.upsert(
                    ids=[f"{doc.id}:{start + i:06d}" for i in range(len(batch))],
                    embeddings=self.embedder.embed([c.question for c in batch]),
                    documents=[c.question for c in batch],
                    metadatas=[chunk_metadata(doc, c) for c in batch],
                )
                if progress:
                    progress(min(start + EMBED_BATCH, len(chunks)), len(chunks))
            self._check_stored(doc, len(chunks))
        except BaseException:
            with suppress(StoreError), self._reachable():  # unreachable: removed later (module doc)
                self._remove(doc.id)
            raise
        self.registry.ready(doc.id)

    def _check_stored(self, doc: DocumentRecord, expected: int) -> None:
        """Mark nothing ready that is not whole: in server mode a process of another home may have
        swapped collections (re-index) or removed chunks meanwhile, unseen by our locks."""
        stored = len(self._texts().get(where={"doc_id": doc.id}, include=[])["ids"])
        if stored != expected:
            raise StoreError(f"{doc.name}: {stored} of its {expected} chunks are stored after writing "
                             "them (changed by another process?); nothing was added, ingest it again")

    @_talks_to_chroma
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

    @_talks_to_chroma
    def count(self) -> int:
        return self._texts().count()

    @_talks_to_chroma
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

    @_talks_to_chroma
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
        with self._reachable():
            collection, offset = self._texts(), 0
        while True:
            with self._reachable():  # a generator: the methods' wrapping would not cover its pages
                got = collection.get(limit=page_size, offset=offset, include=include)
            if not got["ids"]:
                return
            yield got
            offset += len(got["ids"])

    def close(self) -> None:
        self.registry.close()
