"""Finding candidates for a ticket: the knowledge store (Chroma collection + document registry,
embedded or on a Chroma server), the chunk schema, the embedder, hybrid dense + BM25 search, and
re-indexing.

Public faces (loaded on first use): `KnowledgeStore`, `StoreError` (store.py), `ChunkRecord` (chunks.py),
`DocumentRecord` (registry.py), `Embedder`, `shared_embedder` (embedder.py), `HybridRetriever`
(hybrid.py), `Candidate`, `Citation` (candidates.py), `reindex` (reindex.py).
"""

import importlib

_EXPORTS = {"KnowledgeStore": "retriever.store", "StoreError": "retriever.store", "ChunkRecord": "retriever.chunks",
            "DocumentRecord": "retriever.registry", "Embedder": "retriever.embedder",
            "shared_embedder": "retriever.embedder", "HybridRetriever": "retriever.hybrid",
            "Candidate": "retriever.candidates", "Citation": "retriever.candidates", "reindex": "retriever.reindex"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
