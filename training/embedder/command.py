"""The embedder recipe from the command line (`agent-helper train --config` a `recipe = "embedder"`
TOML): check, train, and print what came out."""

from __future__ import annotations

from pathlib import Path

from training.embedder.config import EmbedderConfig
from training.embedder.trainer import EmbedderRun, describe_backend, preflight, train


def run(cfg: EmbedderConfig, home: Path, check: bool = False) -> int:
    prepared = preflight(cfg)
    if check:
        print(f"backend: {describe_backend()}")
        print(f"config OK: {prepared.split.counts()}; base model {prepared.base_path}")
        return 0
    report(train(cfg, home, prepared=prepared))
    return 0


def report(run: EmbedderRun) -> None:
    meta = run.metadata
    before, after = meta["metrics"]["before"], meta["metrics"]["after"]
    print(f"adapter: {run.out_dir} ({meta['adapter_bytes'] / 1e6:.1f} MB, {meta['trainable_parameters']:,} "
          f"LoRA parameters)")
    print(f"{meta['pairs']['triplets']} triplets, {meta['steps']} steps of {meta['mean_triplets_per_step']} triplets "
          f"on average (batch_size {meta['batch_size']}), {meta['s_per_step']} s/step, "
          f"training {meta['train_time_s']} s, wall time {meta['wall_time_s']} s")
    print(f"{'validation':24s} {'before':>8s} {'after':>8s}")
    for key in ("top1", "recall_at_5", "retrieval_threshold", "accuracy", "oos_recall", "escalate_below",
                "floor_oos_recall", "floor_right_answers_lost"):
        if before.get(key) is not None and after.get(key) is not None:
            print(f"{key:24s} {before[key]:8.3f} {after[key]:8.3f}")
    print("the product embeds with this adapter once it is in data/models/embedder-minilm/; knowledge bases "
          "built with another embedder need `agent-helper reindex`")
