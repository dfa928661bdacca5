"""The embedder recipe: labelled tickets -> LoRA adapter for the retriever's MiniLM.

    run = train(load_embedder_config("training/configs/minilm-embedder.toml"), home=Path(".agent-helper"))

Steps (each a small function):
1. preflight: data read, cleaned and split, base model and tracker located — before any model
   loads (ConfigError names the file, line or key to fix);
2. the base model embeds the knowledge side and validation: metrics *before*, and the hard
   negatives of the triplets (pairs.py);
3. LoRA on BERT's query/key/value/dense (`SentenceTransformer.add_adapter`), trained by
   sentence-transformers' own trainer with MultipleNegativesRankingLoss, each batch drawn from one
   knowledge base, with no in-batch negative that shares the anchor's label (sampler.py);
4. metrics *after* and a calibrated `escalate_below`; the run folder gets the adapter
   (adapter_config.json, adapter_model.safetensors), embedder.json (what the product's Embedder
   reads, with the provenance) and metrics.jsonl; reloading it through
   `retriever.embedder.Embedder(adapter=…)` must give the vectors of the model in memory.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from retriever.embedder import ADAPTER_METADATA, PACKAGED_MODEL_NAME, model_hash
from training.config import ConfigError
from training import labelled as data_module
from training.embedder.config import PACKAGED, EmbedderConfig, check_base
from training.labelled import LabelledData, Split
from training.embedder.evaluation import ValidationSet, encode, label_retrieval_evaluator, summary
from training.embedder.pairs import Pairs, mine
from training.tracking import check_tracking
from training.runs import METRICS_FILE, append_metrics, device, shared_training_args, versions

RELOAD_TOLERANCE = 1e-4


@dataclass
class Prepared:
    data: LabelledData
    split: Split
    base_path: Path


@dataclass
class EmbedderRun:
    out_dir: Path
    metadata: dict


def preflight(cfg: EmbedderConfig) -> Prepared:
    """Everything that can be checked without loading a model (raises ConfigError)."""
    base_path = check_base(cfg)
    check_tracking(cfg.tracking)
    labelled = data_module.read_labelled(cfg.data)
    split = data_module.split(labelled, cfg.data, cfg.train.seed)
    counts = split.counts()
    if not counts["validation_in_scope"]:
        raise ConfigError("data: no in-scope validation tickets; raise data.validation_share or add rows")
    return Prepared(labelled, split, base_path)


def describe_backend() -> str:
    import importlib.metadata as md

    import torch

    where = device()
    detail = torch.cuda.get_device_name(0) if where == "cuda" else f"{torch.get_num_threads()} threads"
    return (f"sentence-transformers {md.version('sentence-transformers')} + PEFT {md.version('peft')} LoRA "
            f"on {where} ({detail}), torch {torch.__version__}")


# --- setup ----------------------------------------------------------------------------------------


def _load_base(base_path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(base_path), device=device())


def _fit(trainer, model, max_seq_length: int) -> float:
    """Train with texts cut to `max_seq_length` tokens (a batch is padded to its longest text,
    so this bounds the step time); evaluation before and after uses the model's own limit, as
    the product does. Returns the training time in seconds."""
    inference_limit = model.max_seq_length
    model.max_seq_length = max_seq_length
    started = time.perf_counter()
    try:
        trainer.train()
    finally:
        model.max_seq_length = inference_limit
    return time.perf_counter() - started


def _add_lora(cfg: EmbedderConfig, model) -> int:
    import torch
    from peft import LoraConfig

    torch.manual_seed(cfg.train.seed)  # LoRA's A matrices are drawn at random
    model.add_adapter(LoraConfig(
        task_type="FEATURE_EXTRACTION",
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        exclude_modules=["pooler.dense"],  # mean pooling never reads BERT's pooler
    ))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _datasets(pairs: Pairs):
    """One dataset per knowledge base: sentence-transformers then draws each batch from a single
    one (multi-dataset training), so the in-batch negatives are as close to the anchor's domain as
    the product's own knowledge base, not easy rows of another company's."""
    from datasets import Dataset, DatasetDict

    by_group: dict[str, list] = {}
    for triplet in pairs.triplets:
        by_group.setdefault(triplet.label[0], []).append(triplet)
    datasets = {}
    for group, triplets in by_group.items():
        columns = {"anchor": [t.anchor for t in triplets], "positive": [t.positive for t in triplets]}
        if all(t.negative is not None for t in triplets):
            columns["negative"] = [t.negative for t in triplets]
        datasets[group] = Dataset.from_dict(columns)
    return DatasetDict(datasets)


def _setup_trainer(cfg: EmbedderConfig, model, pairs: Pairs, validation: ValidationSet, out: Path, callbacks):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import MultiDatasetBatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from training.embedder.sampler import no_shared_label_sampler

    t = cfg.train
    args = SentenceTransformerTrainingArguments(
        **shared_training_args(t, out, device()),
        eval_strategy="steps" if t.eval_steps else "no",
        eval_steps=t.eval_steps or None,
        save_strategy="no",  # the adapter is saved once, at the end
        batch_sampler=no_shared_label_sampler(pairs.triplets),
        # batches from every knowledge base, in proportion to its triplets, in random order
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
    )
    return SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=_datasets(pairs),
        loss=MultipleNegativesRankingLoss(model, scale=t.scale),
        evaluator=label_retrieval_evaluator(validation) if t.eval_steps else None,
        callbacks=list(callbacks),
    )


# --- finishing ------------------------------------------------------------------------------------


def _save_adapter(model, out: Path) -> None:
    """PEFT's adapter files only (a few MB), loadable by `SentenceTransformer.load_adapter`."""
    model[0].auto_model.save_pretrained(str(out))
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = PACKAGED_MODEL_NAME  # not this machine's site-packages path
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _reload_check(model, out: Path, base_path: Path, texts: list[str]) -> float:
    """Largest difference between the trained model's vectors and the saved adapter's, loaded the
    way the product loads it. A mismatch is a bug, not a user error: RuntimeError."""
    from retriever.embedder import Embedder

    reloaded = Embedder(base_path, adapter=out).embed(texts)
    difference = float(np.abs(encode(model, texts) - reloaded).max())
    if difference > RELOAD_TOLERANCE:
        raise RuntimeError(f"the saved adapter in {out} does not reproduce the trained model "
                           f"(max difference {difference:.2e})")
    return difference


def _flat(metrics: dict, prefix: str) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _metadata(cfg, pre: Prepared, pairs: Pairs, before: dict, after: dict, trainer, extra: dict) -> dict:
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {
        "escalate_below": after.get("escalate_below"),
        "base_model": {"name": PACKAGED_MODEL_NAME if cfg.embedder.base == PACKAGED else cfg.embedder.base,
                       "hash": model_hash(pre.base_path)},
        "data": {"inputs": pre.data.inputs, "hash": pre.data.data_hash, "notes": pre.data.notes + pre.split.notes,
                 "split": pre.split.counts(), "heldout_labels": pre.split.heldout_labels},
        "pairs": pairs.counts(),
        "metrics": {"before": before, "after": after,
                    "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None},
        "config": cfg.to_dict(),
        "seed": cfg.train.seed,
        "backend": describe_backend(),
        "versions": versions(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


# --- the recipe -----------------------------------------------------------------------------------


def _embed_sides(model, pre: Prepared, log) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    split = pre.split
    large = len(split.knowledge) > 2000
    log(f"embedding {len(split.knowledge)} knowledge rows, {len(split.negatives)} out-of-scope rows and "
        f"{len(split.validation)} validation tickets")
    knowledge = encode(model, [r.text for r in split.knowledge], progress=large)
    negatives = encode(model, [r.text for r in split.negatives]) if split.negatives else np.zeros((0, knowledge.shape[1]), np.float32)
    validation = encode(model, [r.text for r in split.validation], progress=large)
    return knowledge, negatives, validation


def train(cfg: EmbedderConfig, home: Path, log: Callable[[str], None] = print, prepared: Prepared | None = None,
          callbacks: Sequence = ()) -> EmbedderRun:
    """Run one embedder fine-tune end to end; returns the adapter folder and its metadata."""
    from training.tracking import make_tracker, tracker_callback
    from training.runs import metrics_callback, setup_output, setup_threads

    started = time.perf_counter()
    pre = prepared or preflight(cfg)
    setup_threads(cfg)
    log(f"backend: {describe_backend()}")
    log(data_module.describe(pre.data, pre.split))
    out = setup_output(cfg, home, ADAPTER_METADATA, "embedder")
    model = _load_base(pre.base_path)
    validation = ValidationSet(pre.split.knowledge, pre.split.validation)
    knowledge_vectors, negative_vectors, validation_vectors = _embed_sides(model, pre, log)
    before = validation.metrics(knowledge_vectors, validation_vectors)
    log(f"before: {summary(before)}")
    append_metrics(out, {"stage": "before", "step": 0, **_flat(before, "validation")})
    pairs = mine(pre.split.knowledge, knowledge_vectors, pre.split.negatives, negative_vectors, cfg.train.seed,
                 cfg.data.max_pairs, cfg.data.hard_negatives)
    log(f"pairs: {pairs.counts()}")
    if not pairs.triplets:
        raise ConfigError("data: no label has two rows on the knowledge side: nothing to pair")
    trainable = _add_lora(cfg, model)
    log(f"LoRA r={cfg.lora.r} on {', '.join(cfg.lora.target_modules)}: {trainable:,} trainable parameters")
    tracker = make_tracker(cfg.tracking, home)
    tracker.start(cfg.output.run_name or out.name, {"config": cfg.to_dict()})
    try:
        trainer = _setup_trainer(cfg, model, pairs, validation, out,
                                 [metrics_callback(out / METRICS_FILE, started), tracker_callback(tracker), *callbacks])
        train_s = _fit(trainer, model, cfg.embedder.max_seq_length)
        steps = trainer.state.global_step
        knowledge_vectors = encode(model, [r.text for r in pre.split.knowledge], progress=len(pre.split.knowledge) > 2000)
        after = validation.metrics(knowledge_vectors, encode(model, [r.text for r in pre.split.validation]))
        log(f"after:  {summary(after)}")
        append_metrics(out, {"stage": "after", "step": steps, **_flat(after, "validation")})
        tracker.log_metrics(_flat(after, "validation"), step=steps)
        _save_adapter(model, out)
        difference = _reload_check(model, out, pre.base_path, [r.text for r in pre.split.validation[:32]])
        extra = {"trainable_parameters": trainable, "steps": steps, "batch_size": cfg.train.batch_size,
                 # batches are smaller than batch_size where labels would collide
                 "mean_triplets_per_step": round(len(pairs.triplets) * trainer.state.epoch / max(steps, 1), 1),
                 "train_time_s": round(train_s, 1), "s_per_step": round(train_s / max(steps, 1), 3),
                 "reload_max_difference": difference, "embedder_hash": model_hash(pre.base_path, out),
                 "adapter_bytes": (out / "adapter_model.safetensors").stat().st_size,
                 "wall_time_s": round(time.perf_counter() - started, 1)}
        metadata = _metadata(cfg, pre, pairs, before, after, trainer, extra)
        (out / ADAPTER_METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for name in (ADAPTER_METADATA, METRICS_FILE):
            tracker.log_artifact(out / name)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # nothing is saved there (save_strategy "no")
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return EmbedderRun(out, metadata)
