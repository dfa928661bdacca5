"""Where the app keeps its state, and the process-wide settings read from the environment.

`ui` is the only package that reads environment variables; components receive these paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "AGENT_HELPER_HOME"
DEFAULT_HOME = Path(".agent-helper")

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


@dataclass(frozen=True)
class Home:
    root: Path

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


def resolve_home(arg: str | None) -> Home:
    return Home(Path(arg or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve())


def apply_offline_env() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def missing_malloc_env() -> bool:
    return any(key not in os.environ for key in MALLOC_ENV)
