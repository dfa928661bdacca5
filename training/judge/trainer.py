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

Under torchrun / accelerate launch (training/parallel.py) every process runs steps 1-3 on its own
GPU and the Trainer keeps them in lockstep; step 4 and every file are rank 0's alone.
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
from training.judge.models import Backend
from training.judge.sft import completion_loss, setup_trainer  # noqa: F401  (completion_loss: re-exported)
from training.parallel import Parallel, plan_batch, share, wait_for_everyone
from training.runs import METRICS_FILE, append_metrics, metrics_callback, setup_output, setup_threads, versions
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
    wrote: bool = True
    """False on the ranks of a data-parallel launch that only trained (rank 0 wrote everything)."""


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


def _setup_run_folder(cfg: TrainConfig, home: Path, parallel: Parallel) -> Path:
    """Rank 0 makes the run folder (or refuses a finished one); every rank learns the same path,
    which matters when a timestamp names it."""
    found: str | ConfigError | None = None
    if parallel.writes:
        try:
            found = str(setup_output(cfg, home, METADATA_FILE))
        except ConfigError as error:
            found = error
    found = share(found, parallel)
    if isinstance(found, ConfigError):
        raise found
    return Path(found)


def _quiet(line: str) -> None:
    pass


def train(
    cfg: TrainConfig,
    home: Path,
    backend: Backend | None = None,
    callbacks: Sequence = (),
    log: Callable[[str], None] = print,
    checked: Preflight | None = None,
    sft_overrides: dict | None = None,
    parallel: Parallel | None = None,
) -> RunResult:
    """Run one training job end to end; returns where everything was written.

    `sft_overrides` replaces SFTConfig arguments (benchmarks turn evaluation and saving off);
    `parallel` is this process's place in a data-parallel launch (default: asked of accelerate)."""
    from training.judge.models import (
        choose_backend, cuda_available, trainable_model, trainable_parameters, visible_gpus,
    )
    from training.parallel import check_visible_gpus, current
    from training.tracking import Tracker, make_tracker, tracker_callback

    started = time.perf_counter()
    pre = checked or preflight(cfg)
    parallel = parallel or current(cuda_available())
    backend = backend or choose_backend(cfg, parallel)
    check_visible_gpus(parallel, visible_gpus())
    log = log if parallel.writes else _quiet
    batch = plan_batch(cfg.train.batch_size, cfg.train.grad_accum, cfg.train.global_batch, parallel.world_size)
    log(f"backend: {backend.describe()}; {parallel.describe()}, {batch.describe()}")
    setup_threads(cfg)
    out = _setup_run_folder(cfg, home, parallel)
    model, tokenizer = trainable_model(cfg, backend, home, parallel)
    trainable, total = trainable_parameters(model)
    log(f"model: {cfg.model.base}, LoRA r={cfg.lora.r} on {len(cfg.lora.target_modules)} projections: "
        f"{trainable:,} trainable of {total:,} parameters")
    train_ds, eval_ds, dropped = _setup_datasets(cfg, pre.examples, tokenizer, log)
    tracker = make_tracker(cfg.tracking, home) if parallel.writes else Tracker()
    tracker.start(cfg.output.run_name or out.name, {"config": cfg.to_dict(), "backend": backend.name})
    writers = [metrics_callback(out / METRICS_FILE, started), tracker_callback(tracker)] if parallel.writes else []
    try:
        trainer = setup_trainer(cfg, backend, model, tokenizer, train_ds, eval_ds, out, [*writers, *callbacks],
                                sft_overrides, batch, parallel)
        trainer.train()
        wait_for_everyone(parallel)  # no rank may still be reading a checkpoint that rank 0 deletes
        run = _Run(cfg, backend, pre, trainer, tokenizer, out, tracker, started, log)
        facts = {"trainable_parameters": trainable, "train_examples": len(train_ds),
                 "validation_examples": len(eval_ds), "dropped_long_examples": dropped,
                 "parallel": {"world_size": parallel.world_size, "per_device_batch": batch.per_device,
                              "grad_accum": batch.grad_accum, "global_batch": batch.global_batch}}
        result = _finish_run(run, facts) if parallel.writes else _trained_only(run)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return result


@dataclass
class _Run:
    """What the end of a run needs: the trained trainer and where to put its results."""

    cfg: TrainConfig
    backend: Backend
    pre: Preflight
    trainer: object
    tokenizer: object
    out: Path
    tracker: object
    started: float
    log: Callable[[str], None]

    @property
    def state(self):
        return self.trainer.state


def _trained_only(run: _Run) -> RunResult:
    """A rank other than 0: trained in lockstep, writes nothing."""
    state = run.state
    return RunResult(run.out, {}, _best_step(state), state.global_step < state.max_steps, state.global_step,
                     run.pre.examples.notes, wrote=False)


def _finish_run(run: _Run, facts: dict) -> RunResult:
    """Rank 0 (or the only process): adapter, evaluation + calibration, metadata, metrics, plot."""
    cfg, state = run.cfg, run.state
    best = _best_step(state)
    stopped_early = state.global_step < state.max_steps
    model = run.trainer.model
    model.save_pretrained(str(run.out))
    budget = _judge_budget(cfg, run.pre.examples, run.tokenizer)
    verdicts = _evaluate(cfg, run.backend, model, run.tokenizer, run.pre.examples, budget, run.log)
    extra = {**facts, "best_step": best, "steps": state.global_step, "stopped_early": stopped_early,
             "notes": run.pre.examples.notes, "wall_time_s": round(time.perf_counter() - run.started, 1)}
    metadata = _metadata(cfg, run.backend, run.pre, run.trainer, verdicts, budget, extra)
    append_metrics(run.out, {"stage": "final", "step": state.global_step, **_flat_verdicts(verdicts)})
    run.tracker.log_metrics(_flat_verdicts(verdicts), step=state.global_step)
    _finish_files(run.out, cfg, metadata, best, run.tracker, run.log)
    if not cfg.output.keep_checkpoints:
        shutil.rmtree(run.out / "checkpoints", ignore_errors=True)
    return RunResult(run.out, metadata, best, stopped_early, state.global_step, run.pre.examples.notes)


def _flat_verdicts(verdicts: dict) -> dict:
    flat = {}
    for part in ("judge_alone", "retriever_alone", "combined"):
        for key, value in (verdicts.get(part) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"val_{part}_{key}"] = value
    return flat
