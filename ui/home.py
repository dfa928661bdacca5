"""Where the app keeps its state, and the process-wide settings read from the environment.

`ui` is the only package that reads environment variables; components receive these paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

HOME_ENV = "AGENT_HELPER_HOME"
DEFAULT_HOME = Path(".agent-helper")
EMBEDDER_ENV = "AGENT_HELPER_EMBEDDER"
JUDGE_DTYPE_ENV = "AGENT_HELPER_JUDGE_DTYPE"
# The judge's dtypes, as reasoner.backends.DTYPES (not imported: it would load torch for `--help`).
DTYPES = ("auto", "float32", "bfloat16", "float16")
BASE_EMBEDDER = "base"
"""--embedder value for the plain packaged all-MiniLM-L6-v2, without an adapter."""

# Nothing at run time may reach the network: no hub downloads, no telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# glibc's default malloc made KV-cache appends 50x slower under load (DESIGN.md); these only
# take effect at process start, so the CLI re-executes itself once with them set.
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "268435456",
    # Idle OpenMP threads otherwise spin and starve each other on 2 busy cores (measured 22 s vs
    # 4 s per answer while other processes ran).
    "OMP_WAIT_POLICY": "PASSIVE",
}


class EmbedderChoiceError(ValueError):
    """--embedder / $AGENT_HELPER_EMBEDDER names no usable adapter folder."""


def shipped_embedder_adapter() -> Path | None:
    from retriever.embedder import default_adapter_path  # lazy: keeps `--help` instant

    return default_adapter_path()


@dataclass(frozen=True)
class Home:
    root: Path
    embedder_adapter: Path | None = field(default_factory=shipped_embedder_adapter)
    """The search embedder's LoRA adapter folder; None = the plain packaged all-MiniLM-L6-v2.
    The knowledge base must have been built (or re-indexed) with the same embedder."""

    @property
    def models(self) -> Path:
        """Cached model copies (the bf16 embedded reasoner)."""
        return self.root / "models"

    @property
    def feedback_db(self) -> Path:
        return self.root / "feedback.sqlite"

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"


def resolve_home(arg: str | None, embedder: str | None = None) -> Home:
    """--home / $AGENT_HELPER_HOME / ./.agent-helper, with the embedder from `resolve_embedder`."""
    root = Path(arg or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    return Home(root, resolve_embedder(embedder))


def resolve_embedder(arg: str | None) -> Path | None:
    """--embedder / $AGENT_HELPER_EMBEDDER: an adapter folder, or "base" (None); unset = the shipped
    adapter when there is one, else base. EmbedderChoiceError for a folder that is no adapter."""
    value = arg or os.environ.get(EMBEDDER_ENV)
    if not value:
        return shipped_embedder_adapter()
    if value == BASE_EMBEDDER:
        return None
    folder = Path(value).expanduser().resolve()
    if not folder.is_dir():
        raise EmbedderChoiceError(f"embedder {value}: no such folder (expected an adapter folder or "
                                  f"'{BASE_EMBEDDER}')")
    if not (folder / "adapter_config.json").is_file():
        raise EmbedderChoiceError(f"embedder {value}: not an embedder adapter folder (no "
                                  f"adapter_config.json; expected an adapter folder or "
                                  f"'{BASE_EMBEDDER}')")
    return folder


def resolve_judge_dtype(arg: str | None) -> str:
    """--dtype / $AGENT_HELPER_JUDGE_DTYPE / "auto"; ValueError for a name not in DTYPES."""
    value = arg or os.environ.get(JUDGE_DTYPE_ENV) or "auto"
    if value not in DTYPES:
        raise ValueError(f"{JUDGE_DTYPE_ENV}={value!r}: expected one of {', '.join(DTYPES)}")
    return value


def apply_offline_env() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def missing_malloc_env() -> bool:
    return any(key not in os.environ for key in MALLOC_ENV)


def load_embedder(home: Home):
    """The search embedder `home` names, loaded once per process (retriever.embedder.shared_embedder)."""
    from retriever.embedder import shared_embedder

    adapter = home.embedder_adapter
    return shared_embedder(None, str(adapter) if adapter is not None else None)
