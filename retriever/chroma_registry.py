"""The document registry of a knowledge base on a Chroma server, kept on that server.

Every app process pointed at one server must agree on the documents, whatever its home, so the
registry cannot be a file under a home. It is one Chroma collection, `agent-helper-registry`:
- one record per document, id = the document's id, metadata = the fields of `DocumentRecord`
  (defined once, in registry.py) plus `status` ("ingesting" until all chunks are stored, then
  "ready"). Each change is one record's write, which the server applies whole.
- the collection's own metadata names the active chunk collection (absent: the first one).

Chroma stores vectors, not rows: each record carries a constant one-number embedding that nothing
searches. A record written by a version with fewer `DocumentRecord` fields reads back with the
newer fields' defaults.

The generation is not a counter (a counter shared by processes would need a lock the server does
not offer) but a fingerprint of the ready documents and the active collection, so any process sees
any other's ingest, delete or re-index as a change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields

from retriever.registry import INGESTING, READY, DocumentRecord

REGISTRY_COLLECTION = "agent-helper-registry"
ACTIVE_KEY = "active_collection"
_NO_VECTOR = [0.0]
"""The embedding of every registry record: Chroma wants one, nothing ever searches them."""


def _record(meta: dict) -> DocumentRecord:
    return DocumentRecord(**{f.name: meta[f.name] for f in fields(DocumentRecord) if f.name in meta})


class ChromaRegistry:
    """The registry collection on a Chroma server (`client`: a chromadb HttpClient)."""

    def __init__(self, client):
        self._client = client
        self._records = client.get_or_create_collection(REGISTRY_COLLECTION, embedding_function=None)

    def close(self) -> None:
        """Nothing to close: every call is one request to the server."""

    # -- documents -----------------------------------------------------------------------------

    def documents(self) -> list[DocumentRecord]:
        return sorted(self._select({"status": READY}), key=lambda d: d.added_at)

    def find(self, *, doc_id: str | None = None, sha256: str | None = None) -> DocumentRecord | None:
        if doc_id is not None:
            found = self._select({"status": READY}, ids=[doc_id])
        else:
            found = self._select({"$and": [{"sha256": sha256}, {"status": READY}]})
        return found[0] if found else None

    def unfinished(self, begun_before: float | None = None) -> list[str]:
        """Ids of documents not ready (optionally only those whose ingest began before a time)."""
        where: dict = {"status": INGESTING}
        if begun_before is not None:
            where = {"$and": [where, {"added_at": {"$lt": begun_before}}]}
        return list(self._records.get(where=where, include=[])["ids"])

    def begin(self, doc: DocumentRecord) -> None:
        """Record a document whose chunks are about to be written; replaces what an ingest of the
        same file that the server cut off left behind."""
        self._records.upsert(ids=[doc.id], embeddings=[_NO_VECTOR],
                             metadatas=[{**asdict(doc), "status": INGESTING}])

    def ready(self, doc_id: str) -> None:
        self._records.update(ids=[doc_id], metadatas=[{"status": READY}])  # merges: one key changes

    def forget(self, doc_id: str) -> None:
        self._records.delete(ids=[doc_id])

    def _select(self, where: dict, ids: list[str] | None = None) -> list[DocumentRecord]:
        got = self._records.get(ids=ids, where=where, include=["metadatas"])
        return [_record(meta) for meta in got["metadatas"]]

    # -- the active collection and the generation --------------------------------------------

    def active_collection(self, default: str) -> str:
        # Fetched on every call: another process may have re-indexed since.
        meta = self._client.get_collection(REGISTRY_COLLECTION, embedding_function=None).metadata or {}
        return meta.get(ACTIVE_KEY) or default

    def activate(self, collection: str) -> None:
        """Name the active collection: one write of the registry collection's metadata."""
        self._records.modify(metadata={ACTIVE_KEY: collection})

    @property
    def generation(self) -> int:
        ready = sorted((d.id, d.added_at) for d in self._select({"status": READY}))
        state = json.dumps([self.active_collection(""), ready])
        return int(hashlib.sha256(state.encode()).hexdigest()[:15], 16)


__all__ = ["REGISTRY_COLLECTION", "ChromaRegistry"]
