"""A training run's folder and bookkeeping, shared by every recipe.

    out = setup_output(cfg, home)          # output.dir, or <home>/runs/<config name>-<UTC time>
    callbacks = [metrics_callback(out / METRICS_FILE, started), …]

A run folder holds the trained adapter, its metadata file (the recipe's), `metrics.jsonl` (one JSON
object per logging/evaluation step, plus a final record) and, for the judge, `loss_curve.png`.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from training.config import ConfigError

METRICS_FILE = "metrics.jsonl"
VERSIONED_PACKAGES = ("torch", "transformers", "peft", "trl", "sentence-transformers", "unsloth", "bitsandbytes")


def setup_output(cfg, home: Path, finished_file: str, what: str = "run") -> Path:
    """The run folder of a judge or embedder config (`output.dir`, else a timestamped one under
    <home>/runs), with an empty metrics file; refused when `finished_file` says a run ended there."""
    if cfg.output.dir:
        out = Path(cfg.output.dir)
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path(home) / "runs" / f"{cfg.name}-{stamp}"
    if (out / finished_file).exists():
        raise ConfigError(f"{out} already holds a finished {what}; choose another output.dir")
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text("", encoding="utf-8")
    return out


def device() -> str:
    """Where a recipe trains: the GPU when torch sees one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def setup_threads(cfg) -> None:
    """`train.num_threads` torch CPU threads (0 = torch's default)."""
    if cfg.train.num_threads:
        import torch

        torch.set_num_threads(cfg.train.num_threads)


def metrics_callback(path: Path, started: float):
    from transformers import TrainerCallback

    class _WriteMetrics(TrainerCallback):
        """One JSON line per log / eval event: step, epoch, seconds since start, values."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            record = {"step": state.global_step, "epoch": state.epoch,
                      "time_s": round(time.perf_counter() - started, 3), **logs}
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    return _WriteMetrics()


def shared_training_args(t, out: Path, device: str) -> dict:
    """The transformers TrainingArguments that both trainers (TRL's SFT here, sentence-transformers'
    for the embedder) set the same way from their [train] section: schedule, logging, seeds, device."""
    return dict(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a share of all steps
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to="none",  # tracking goes through training.tracking (never the Neptune callback)
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=device == "cpu",
        dataloader_pin_memory=device == "cuda",
        disable_tqdm=False,
    )


def append_metrics(out: Path, record: dict) -> None:
    with (out / METRICS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


