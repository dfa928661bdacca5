"""One loaded judge per process and configuration, shared by every service (and test) in it.

Loading the model takes seconds (the first load of the embedded model ~15 s), so a judge is loaded
once per (model config, judge config, search embedder) and kept; services over different homes share
it. Without an explicit judge config the judge is calibrated for the embedder that finds the
candidates (its similarity scale), so the embedder is part of the key.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from app.batching import JudgeBatcher
from reasoner.backends import EMBEDDED, ModelConfig, default_adapter_path
from reasoner.judge import Judge, JudgeConfig
from reasoner.server_config import JudgeServer


def default_model_config(models_dir: Path, base: str = EMBEDDED, adapter: Path | None = None,
                         dtype: str = "auto", server: JudgeServer | None = None) -> ModelConfig:
    """The embedded model (with the shipped adapter when there is one), cached under `models_dir`;
    on `server` when one is given."""
    return ModelConfig(base=base, adapter=adapter if adapter is not None else default_adapter_path(),
                       cache_dir=models_dir, dtype=dtype, server=server)


@dataclass(frozen=True)
class SearchEmbedder:
    """What the judge's calibration depends on in the embedder that found the candidates."""

    hash: str | None = None
    """Picks the adapter's calibration made with this embedder's similarities, when it has one."""
    escalate_below: float | None = None
    """Nothing this close: escalate without asking the model."""
    knowledge_floor: float | None = None
    """The knowledge base's own floor where it is FAQ-style (retriever/escalation.py): replaces
    `escalate_below` and moves the calibration with it (JudgeConfig.with_knowledge_floor)."""

    @classmethod
    def of(cls, embedder, knowledge_floor: float | None = None) -> "SearchEmbedder":
        return cls(getattr(embedder, "hash", None), getattr(embedder, "escalate_below", None), knowledge_floor)


@dataclass
class SharedJudge:
    judge: Judge
    batcher: JudgeBatcher
    """Concurrent requests to this judge are decoded together (app/batching.py)."""


_JUDGES: dict[tuple, SharedJudge] = {}
_LOADING = threading.Lock()
"""Serialises loads only: reading _JUDGES (status lines) never waits for a load in progress."""


def _key(model_config: ModelConfig, judge_config: JudgeConfig | None, embedder: SearchEmbedder) -> tuple:
    return (model_config, judge_config, embedder if judge_config is None else None)


def loaded_judge(model_config: ModelConfig, judge_config: JudgeConfig | None,
                 embedder: SearchEmbedder = SearchEmbedder()) -> SharedJudge | None:
    """The judge if it is loaded already (never loads)."""
    return _JUDGES.get(_key(model_config, judge_config, embedder))


def shared_judge(model_config: ModelConfig, judge_config: JudgeConfig | None, max_batch: int,
                 embedder: SearchEmbedder = SearchEmbedder()) -> SharedJudge:
    """The judge for this configuration, loaded on first use; concurrent first calls wait for one load.

    `judge_config` None = the adapter's values calibrated for the search embedder, with its
    `escalate_below` or the knowledge base's own floor."""
    key = _key(model_config, judge_config, embedder)
    shared = _JUDGES.get(key)
    if shared is not None:
        return shared
    from reasoner.backends import load_model

    with _LOADING:
        shared = _JUDGES.get(key)
        if shared is None:
            # Another judge config over the same model reuses its weights.
            same_model = next((s for k, s in _JUDGES.items() if k[0] == model_config), None)
            loaded = same_model.judge.loaded if same_model else load_model(model_config)
            if judge_config is None:
                judge_config = JudgeConfig.from_metadata(loaded.adapter_metadata, embedder_hash=embedder.hash,
                                                         escalate_below=embedder.escalate_below
                                                         ).with_knowledge_floor(embedder.knowledge_floor)
            judge = Judge(loaded, judge_config)
            shared = _JUDGES[key] = SharedJudge(judge, JudgeBatcher(judge, max_batch=max_batch))
        return shared


__all__ = ["SearchEmbedder", "SharedJudge", "default_model_config", "loaded_judge", "shared_judge"]
