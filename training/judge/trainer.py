"""The training recipe: config -> checks -> model + LoRA -> TRL SFTTrainer -> adapter + report.

    result = train(load_config("training/configs/smollm2-135m-lora.toml"), home=Path(".agent-helper"))

Steps (each a small `_setup_*` / `_finish_*` function):
1. preflight: data files read and validated, base model located, tracker importable — all
   before a model is loaded (`preflight` raises ConfigError with the file/line/key to fix);
2. backend (unsloth or transformers + PEFT, printed), model + LoRA, tokenized datasets (loss on the
   completion only; length-grouped batches, dynamic padding);
3. SFTTrainer with validation loss every `eval_steps`, a checkpoint at each, early stopping, and
   the best checkpoint restored at the end (`load_best_model_at_end`);
4. evaluation on validation examples through the reasoner's Judge, calibration of the combination
   parameters, then the run folder: the adapter (save_pretrained), agent_helper.json (metadata the
   reasoner reads), metrics.jsonl (every log/eval step), loss_curve.png.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from reasoner import prompt
from reasoner.judge import DEFAULT_MAX_NEW_TOKENS, JudgeConfig
from reasoner.metadata import ADAPTER_METADATA as METADATA_FILE
from reasoner.metadata import AdapterMetadata
from training.config import ConfigError
from training.judge.config import TrainConfig, check_base_model
from training.judge import evaluation
from training.judge.examples import Examples, judge_format, load_examples
from training.judge.models import Backend, checkpointing
from training.runs import (
    METRICS_FILE, append_metrics, metrics_callback, setup_output, setup_threads, shared_training_args, versions,
)
from training.tracking import check_tracking

LOSS_CURVE_FILE = "loss_curve.png"
MAX_JUDGE_TOKENS = 64


@dataclass
class Preflight:
    examples: Examples
    base_source: str
    """"embedded", "folder" or "cache": where the base model will be read from."""


@dataclass
class RunResult:
    out_dir: Path
    metadata: dict
    best_step: int | None
    stopped_early: bool
    steps: int
    notes: list[str] = field(default_factory=list)


def preflight(cfg: TrainConfig) -> Preflight:
    """Everything that can be checked without loading a model (raises ConfigError)."""
    base_source = check_base_model(cfg.model.base)
    check_tracking(cfg.tracking)
    examples = load_examples(cfg.data, cfg.train.seed)
    return Preflight(examples, base_source)


# --- setup ----------------------------------------------------------------------------------------


def _setup_datasets(cfg: TrainConfig, examples: Examples, tokenizer, log):
    from training.judge.examples import tokenize, to_dataset

    limit = cfg.model.max_seq_length
    train = tokenize(examples.train, tokenizer, cfg.data, limit)
    valid = tokenize(examples.validation, tokenizer, cfg.data, limit)
    lengths = [r["length"] for r in train.rows]
    log(f"data: {len(train.rows)} training / {len(valid.rows)} validation examples, "
        f"tokens per example median {sorted(lengths)[len(lengths) // 2] if lengths else 0}, max {max(lengths, default=0)}"
        + (f"; dropped over {limit} tokens: {train.dropped_long} + {valid.dropped_long}" if train.dropped_long + valid.dropped_long else ""))
    return to_dataset(train, "data.train"), to_dataset(valid, "data.validation"), train.dropped_long + valid.dropped_long


def _precision(cfg: TrainConfig, backend: Backend) -> dict:
    if backend.name == "unsloth":
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return {"bf16": bf16, "fp16": not bf16}
    return {"bf16": backend.dtype == "bfloat16", "fp16": backend.dtype == "float16"}


def _sft_config(cfg: TrainConfig, backend: Backend, out: Path, overrides: dict | None = None):
    from trl import SFTConfig

    t = cfg.train
    values = dict(
        **shared_training_args(t, out, backend.device),
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        eval_strategy="steps",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.eval_steps,  # a checkpoint per evaluation, so the best one can be restored
        save_total_limit=cfg.output.save_total_limit,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        padding_free=t.padding_free,
        max_length=None,  # examples over model.max_seq_length were dropped when tokenized
        completion_only_loss=True,
        gradient_checkpointing=backend.name != "unsloth" and checkpointing(cfg, backend),
        **_precision(cfg, backend),
    )
    values.update(overrides or {})
    return SFTConfig(**values)


def completion_loss(model, inputs: dict, num_items_in_batch=None, accepts_loss_kwargs: bool = True):
    """Causal-LM loss on the completion tokens, projecting only their positions through the LM head.

    The same value as the model's own loss (summed over labelled tokens, divided by
    `num_items_in_batch` when given, else by their count), but the (tokens x vocabulary) logits of
    the prompt, ~90% of each example, are never computed: about a fifth less work per CPU step
    for SmolLM2, whose 49,152-word head is a fifth of the model."""
    import torch.nn.functional as F

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = inputs["labels"]
    features = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    hidden = causal_lm.get_decoder()(**features).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != -100
    logits = causal_lm.get_output_embeddings()(hidden[keep]).float()
    total = F.cross_entropy(logits, targets[keep], reduction="sum")
    if num_items_in_batch is not None and accepts_loss_kwargs:
        return total / num_items_in_batch
    return total / keep.sum().clamp(min=1)


def sft_trainer_class():
    """TRL's SFTTrainer, or, where its Triton loss kernel cannot load (torch CPU builds ship no
    Triton, and TRL 1.15 then fails in compute_loss), a subclass computing the same
    completion-only loss with `completion_loss`."""
    from trl import SFTTrainer
    from trl.trainer import utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", True) is not None:
        return SFTTrainer

    class CompletionLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = completion_loss(model, inputs, num_items_in_batch, self.model_accepts_loss_kwargs)
            return (loss, {"loss": loss}) if return_outputs else loss

    return CompletionLossSFTTrainer


def _setup_trainer(cfg, backend, model, tokenizer, train_ds, eval_ds, out, callbacks, sft_overrides=None):
    from transformers import EarlyStoppingCallback

    args = _sft_config(cfg, backend, out, sft_overrides)
    if cfg.train.early_stopping_patience > 0 and args.load_best_model_at_end:
        callbacks = [*callbacks, EarlyStoppingCallback(
            early_stopping_patience=cfg.train.early_stopping_patience,
            early_stopping_threshold=cfg.train.early_stopping_threshold,
        )]
    return sft_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


# --- finish ---------------------------------------------------------------------------------------


def _best_step(state) -> int | None:
    step = getattr(state, "best_global_step", None)
    if step:
        return int(step)
    checkpoint = getattr(state, "best_model_checkpoint", None)
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None


def _judge_budget(cfg: TrainConfig, examples: Examples, tokenizer) -> int:
    """The judge's max_new_tokens: covers 99% of training completions, capped for latency."""
    from training.judge.examples import completion_token_lengths

    sample = examples.train[:2000]
    lengths = sorted(completion_token_lengths(sample, tokenizer, cfg.data))
    if not lengths:
        return DEFAULT_MAX_NEW_TOKENS
    p99 = lengths[min(len(lengths) - 1, math.ceil(0.99 * len(lengths)) - 1)]
    return min(MAX_JUDGE_TOKENS, p99 + 2)


def _evaluate(cfg, backend, model, tokenizer, examples: Examples, budget: int, log) -> dict:
    from tqdm.auto import tqdm

    from training.judge.models import for_inference

    if cfg.eval.method == "none":
        return {}
    chosen = evaluation.listwise_for_eval(examples.validation, cfg.data.top_k, cfg.eval.max_examples, cfg.train.seed)
    if not chosen:
        log("evaluation: no listwise validation examples; metrics and calibration skipped")
        return {}
    for_inference(model, backend)
    bar = tqdm(total=len(chosen), desc=f"judging validation ({cfg.eval.method})")
    if cfg.eval.method == "judge":
        judged = evaluation.judge_with_reasoner(chosen, model, tokenizer, judge_format(cfg.data), cfg.data.top_k,
                                                min(budget, cfg.eval.max_new_tokens), backend.name, bar.update,
                                                cfg.eval.batch_size)
    else:
        judged = evaluation.judge_teacher_forced(chosen, model, tokenizer, cfg.eval.batch_size, bar.update)
    bar.close()
    return {"method": cfg.eval.method, **evaluation.evaluate(judged)}


def _metadata(cfg, backend, pre: Preflight, trainer, verdicts: dict, budget: int, extra: dict) -> AdapterMetadata:
    defaults = asdict(JudgeConfig())
    calibration = verdicts.get("calibration") or {k: defaults[k] for k in (
        "judge_weight", "threshold", "retriever_temperature", "retriever_none_similarity")}
    eval_losses = [r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r]
    return AdapterMetadata({
        "prompt_version": prompt.PROMPT_VERSION,
        "prompt_format": judge_format(cfg.data),
        "base_model": cfg.model.base,
        "top_k": cfg.data.top_k,
        "max_new_tokens": budget,
        "calibration": calibration,
        "metrics": {
            "best_eval_loss": min(eval_losses) if eval_losses else None,
            "final_eval_loss": eval_losses[-1] if eval_losses else None,
            "verdicts": verdicts,
        },
        "data_hash": pre.examples.data_hash,
        "config": cfg.to_dict(),
        "backend": backend.name,
        "backend_detail": backend.describe(),
        "versions": versions(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    })


def _finish_files(out: Path, cfg: TrainConfig, metadata: AdapterMetadata, best_step, tracker, log) -> None:
    from training.plots import plot_loss_curve

    metadata.write(out)
    try:
        plot_loss_curve(out / METRICS_FILE, out / LOSS_CURVE_FILE, best_step, f"{cfg.name}: loss")
    except ImportError:  # e.g. a bare GPU image: draw it later with `python -m training.plots RUN_DIR`
        log(f"matplotlib is not installed: {LOSS_CURVE_FILE} not drawn (python -m training.plots {out})")
    for name in (METADATA_FILE, METRICS_FILE, LOSS_CURVE_FILE):
        tracker.log_artifact(out / name)


# --- the recipe -----------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    home: Path,
    backend: Backend | None = None,
    callbacks: Sequence = (),
    log: Callable[[str], None] = print,
    checked: Preflight | None = None,
    sft_overrides: dict | None = None,
) -> RunResult:
    """Run one training job end to end; returns where everything was written.

    `sft_overrides` replaces SFTConfig arguments (benchmarks turn evaluation and saving off)."""
    from training.judge.models import choose_backend, trainable_model, trainable_parameters
    from training.tracking import make_tracker, tracker_callback

    started = time.perf_counter()
    pre = checked or preflight(cfg)
    backend = backend or choose_backend(cfg)
    log(f"backend: {backend.describe()}")
    setup_threads(cfg)
    out = setup_output(cfg, home, METADATA_FILE)
    model, tokenizer = trainable_model(cfg, backend, home)
    trainable, total = trainable_parameters(model)
    log(f"model: {cfg.model.base}, LoRA r={cfg.lora.r} on {len(cfg.lora.target_modules)} projections: "
        f"{trainable:,} trainable of {total:,} parameters")
    train_ds, eval_ds, dropped = _setup_datasets(cfg, pre.examples, tokenizer, log)
    tracker = make_tracker(cfg.tracking, home)
    tracker.start(cfg.output.run_name or out.name, {"config": cfg.to_dict(), "backend": backend.name})
    try:
        trainer = _setup_trainer(cfg, backend, model, tokenizer, train_ds, eval_ds, out,
                                 [metrics_callback(out / METRICS_FILE, started), tracker_callback(tracker), *callbacks],
                                 sft_overrides)
        trainer.train()
        best = _best_step(trainer.state)
        stopped_early = trainer.state.global_step < trainer.state.max_steps
        model = trainer.model
        model.save_pretrained(str(out))
        budget = _judge_budget(cfg, pre.examples, tokenizer)
        verdicts = _evaluate(cfg, backend, model, tokenizer, pre.examples, budget, log)
        extra = {"trainable_parameters": trainable, "best_step": best, "steps": trainer.state.global_step,
                 "stopped_early": stopped_early, "train_examples": len(train_ds),
                 "validation_examples": len(eval_ds), "dropped_long_examples": dropped,
                 "notes": pre.examples.notes, "wall_time_s": round(time.perf_counter() - started, 1)}
        metadata = _metadata(cfg, backend, pre, trainer, verdicts, budget, extra)
        append_metrics(out, {"stage": "final", "step": trainer.state.global_step, **_flat_verdicts(verdicts)})
        tracker.log_metrics(_flat_verdicts(verdicts), step=trainer.state.global_step)
        _finish_files(out, cfg, metadata, best, tracker, log)
        if not cfg.output.keep_checkpoints:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return RunResult(out, metadata, best, stopped_early, trainer.state.global_step, pre.examples.notes)


def _flat_verdicts(verdicts: dict) -> dict:
    flat = {}
    for part in ("judge_alone", "retriever_alone", "combined"):
        for key, value in (verdicts.get(part) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"val_{part}_{key}"] = value
    return flat
