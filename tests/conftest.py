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


def judge_dtype() -> str:
    """The judge's dtype for this run: $AGENT_HELPER_JUDGE_DTYPE (as the product reads it), else auto.
    `AGENT_HELPER_JUDGE_DTYPE=bfloat16 make test` runs the whole suite, subprocesses included, in bf16."""
    from ui.settings import resolve_judge_dtype

    return resolve_judge_dtype(None)


def pytest_sessionstart(session) -> None:
    """CPU flags and the judge's dtype head every run, also under -q (CI logs): numerics differ by both."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for line in _platform_lines():
            reporter.write_line(line)


def _platform_lines() -> list[str]:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    from reasoner.backends import ModelConfig, resolve_dtype

    dtype = judge_dtype()
    resolved = resolve_dtype(ModelConfig(dtype=dtype), "cpu")
    return [f"cpu flags: {' '.join(shown) or 'none of avx2/avx512f/avx512_bf16/amx'}",
            f"judge dtype: {dtype} (embedded model on cpu: {resolved})"]


@pytest.fixture(scope="session")
def embedder():
    from retriever.embedder import shared_embedder

    return shared_embedder()
