"""Where the app keeps its state: one folder (`--home`), and the search embedder it was built with.

Components receive these paths; reading the environment to find them is the interfaces' job (ui/settings.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOME = Path(".agent-helper")


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
        """Cached model copies (the embedded judge's safetensors copy)."""
        return self.root / "models"

    @property
    def feedback_db(self) -> Path:
        """Every answer given and what agents said about it (app/feedback.py)."""
        return self.root / "feedback.sqlite"

    @property
    def uploads(self) -> Path:
        """Files uploaded through the page or the API, one folder per document id."""
        return self.root / "uploads"


def load_embedder(home: Home):
    """The search embedder `home` names, loaded once per process (retriever.embedder.shared_embedder)."""
    from retriever.embedder import shared_embedder

    adapter = home.embedder_adapter
    return shared_embedder(None, str(adapter) if adapter is not None else None)


__all__ = ["DEFAULT_HOME", "Home", "load_embedder", "shipped_embedder_adapter"]
