"""The reranker recipe from the command line (`agent-helper train --config` a `recipe = "reranker"`
TOML): check, train, and print what came out."""

from __future__ import annotations

from pathlib import Path

from training.reranker.config import RerankerConfig
from training.reranker.evaluation import summary
from training.reranker.trainer import RerankerRun, describe_backend, preflight, train


def run(cfg: RerankerConfig, home: Path, check: bool = False) -> int:
    prepared = preflight(cfg)
    if check:
        print(f"backend: {describe_backend()}")
        print(f"config OK: {prepared.split.counts()}; base model {prepared.base.path}; mining adapter "
              f"{prepared.mining_adapter or 'none'}")
        return 0
    report(train(cfg, home, prepared=prepared))
    return 0


def report(run: RerankerRun) -> None:
    meta = run.metadata
    print(f"reranker: {run.out_dir} ({meta['adapter_bytes'] / 1e6:.1f} MB, {meta['trainable_parameters']:,} "
          f"trainable parameters), {meta['steps']} steps, best epoch {meta['metrics']['best_epoch']}, "
          f"training {meta['train_time_s']} s, wall time {meta['wall_time_s']} s")
    print(f"validation {summary(meta['metrics']['validation'])}")
    print(f"fusion alpha {meta['scoring']['alpha']} (0 = retriever order, 1 = reranker order)")
    print("the product reranks with it once it is in data/models/reranker-minilm/")
