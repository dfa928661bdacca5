"""Every test runs offline, with caches in a temporary folder (onnxruntime and Chroma write there)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_CACHE = Path(tempfile.mkdtemp(prefix="agent-helper-tests-"))
os.environ.update(
    HOME=str(_CACHE / "home"),
    XDG_CACHE_HOME=str(_CACHE / "cache"),
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    ANONYMIZED_TELEMETRY="False",
    GRADIO_ANALYTICS_ENABLED="False",
    TOKENIZERS_PARALLELISM="false",
)


@pytest.fixture(scope="session")
def embedder():
    from retriever.embedder import shared_embedder

    return shared_embedder()
