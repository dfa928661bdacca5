"""Where the app keeps its state: one folder (`--home`), the search embedder it was built with, and
the Chroma server that holds the knowledge base instead of the folder (`--chroma-url`), if any.

Components receive these paths; reading the environment to find them is the interfaces' job (ui/settings.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retriever.chroma_client import ChromaServer

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
    chroma_server: "ChromaServer | None" = None
    """None: the knowledge base (chunks and document registry) lives under `root`. Else on this
    server, shared by every process pointed at it; `root` then keeps this process's own state
    (feedback, uploaded files, search index cache, locks)."""

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


def open_store(home: Home, *, check_embedder: bool = True):
    """The knowledge store `home` names (retriever.store.KnowledgeStore), embedded or on its server."""
    from retriever.store import KnowledgeStore

    return KnowledgeStore(home.root, load_embedder(home), check_embedder=check_embedder,
                          server=home.chroma_server)


__all__ = ["DEFAULT_HOME", "Home", "load_embedder", "open_store", "shipped_embedder_adapter"]
