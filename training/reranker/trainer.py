"""The reranker recipe: labelled tickets -> LoRA adapter + head for a MiniLM cross-encoder.

    run = train(load_reranker_config("training/configs/reranker-gpu.toml"), home=Path(".agent-helper"))

Steps:
1. preflight: data read, cleaned and split (training/labelled.py, as the embedder recipe), base
   model, mining embedder and tracker located, before any model loads;
2. the product's embedder (with its shipped adapter) mines candidate lists (mining.py): training
   tickets leave-one-out with hard negatives, validation tickets over the top `candidates`;
3. sentence-transformers' CrossEncoder on the base weights (new one-logit head) with LoRA, trained
   by its CrossEncoderTrainer (ListNetLoss or BCE); after each epoch the validation lists are
   reranked and the best epoch's adapter is kept (early stopping, time limit);
4. the kept adapter is loaded back the way the product loads it; its validation logits fit the
   scoring (fusion weight, calibration) and give the metrics; reranker.json is written
   (datamodel.py) and the folder reloaded through retriever.reranker.Reranker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from retriever.reranker import RERANKER_METADATA, Reranker, candidate_text, load_model, pair_logits
from training import labelled
from training.config import ConfigError
from training.reranker import datamodel
from training.reranker.config import Base, RerankerConfig, check_base, check_mining_adapter
from training.reranker.evaluation import fit_scoring, order_metrics, summary, validation_metrics
from training.reranker.mining import Candidates, mine_training, mine_validation, sample_indices
from training.runs import METRICS_FILE, append_metrics, device
from training.tracking import check_tracking

RELOAD_TOLERANCE = 1e-3


@dataclass
class Prepared:
    data: labelled.LabelledData
    split: labelled.Split
    base: Base
    mining_adapter: Path | None


@dataclass
class Mined:
    train: list[Candidates]
    validation: list[Candidates]
    embedder: dict = field(default_factory=dict)

    def counts(self) -> dict:
        in_scope = [item for item in self.validation if item.in_scope]
        return {"train_tickets": len(self.train), "validation_tickets": len(self.validation),
                "validation_in_scope": len(in_scope),
                "validation_retrieved": sum(item.positive is not None for item in in_scope)}


@dataclass
class RerankerRun:
    out_dir: Path
    metadata: dict


def preflight(cfg: RerankerConfig) -> Prepared:
    """Everything that can be checked without loading a model (raises ConfigError)."""
    base = check_base(cfg)
    adapter = check_mining_adapter(cfg)
    check_tracking(cfg.tracking)
    data = labelled.read_labelled(cfg.data)
    split = labelled.split(data, cfg.data, cfg.train.seed)
    if not any(row.label is not None for row in split.validation):
        raise ConfigError("data: no in-scope validation tickets; raise data.validation_share or add rows")
    return Prepared(data, split, base, adapter)


def describe_backend() -> str:
    import importlib.metadata as md

    import torch

    where = device()
    detail = torch.cuda.get_device_name(0) if where == "cuda" else f"{torch.get_num_threads()} threads"
    return (f"sentence-transformers {md.version('sentence-transformers')} CrossEncoder + PEFT {md.version('peft')} "
            f"LoRA on {where} ({detail}), torch {torch.__version__}")


# --- mining ---------------------------------------------------------------------------------------


def mine(cfg: RerankerConfig, pre: Prepared, log) -> Mined:
    """Candidate lists from the product's embedder, on the training device."""
    from retriever.embedder import Embedder

    embedder = Embedder(pre.base.path, adapter=pre.mining_adapter)
    embedder.model.to(device())
    knowledge = pre.split.knowledge
    m = cfg.mining
    train_rows = sample_indices(len(knowledge), m.max_train_tickets, cfg.train.seed)
    validation = [pre.split.validation[i]
                  for i in sample_indices(len(pre.split.validation), m.max_validation_tickets, cfg.train.seed)]
    log(f"mining with {embedder.name}: embedding {len(knowledge)} knowledge rows and {len(validation)} "
        "validation tickets")
    vectors = embedder.embed([row.text for row in knowledge])
    train = mine_training(train_rows, knowledge, vectors, 1 + m.negatives, m.pool, m.label_votes)
    checked = mine_validation(validation, embedder.embed([row.text for row in validation]), knowledge, vectors,
                              m.candidates, m.pool, m.label_votes)
    embedder.model.to("cpu")
    return Mined(train, checked, {"name": embedder.name, "hash": embedder.hash})


def texts_of(item: Candidates, knowledge: list, cfg: RerankerConfig) -> list[str]:
    r = cfg.reranker
    return [candidate_text(knowledge[j].text, knowledge[j].answer, r.document, r.answer_chars) for j in item.rows]


def score_lists(model, tokenizer, lists: list[Candidates], knowledge: list, cfg: RerankerConfig) -> list[np.ndarray]:
    """Logits of every list's candidates, in one batched pass."""
    tickets, texts, bounds = [], [], []
    for item in lists:
        candidate_texts = texts_of(item, knowledge, cfg)
        bounds.append((len(texts), len(texts) + len(candidate_texts)))
        tickets += [item.ticket] * len(candidate_texts)
        texts += candidate_texts
    logits = pair_logits(model, tokenizer, tickets, texts, cfg.reranker.max_length, cfg.train.eval_batch_size)
    return [logits[a:b] for a, b in bounds]


# --- the model and its trainer --------------------------------------------------------------------

HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
            "special_tokens_map.json")


def cross_encoder(cfg: RerankerConfig, base: Path, view: Path):
    """CrossEncoder on the base weights with a new one-logit head, LoRA added. It is built from a
    view of the folder without sentence-transformers' module files (links to the same weights),
    so it becomes a sequence classifier rather than the bi-encoder."""
    import torch
    from peft import LoraConfig
    from sentence_transformers import CrossEncoder

    view.mkdir(parents=True, exist_ok=True)
    for name in HF_FILES:
        if (base / name).is_file() and not (view / name).exists():
            (view / name).symlink_to((base / name).resolve())
    torch.manual_seed(cfg.train.seed)  # the head and LoRA's A matrices are drawn at random
    model = CrossEncoder(str(view), num_labels=1, max_length=cfg.reranker.max_length, device=device())
    pooler = cfg.lora.train_pooler
    model.add_adapter(LoraConfig(task_type="SEQ_CLS", r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                 lora_dropout=cfg.lora.dropout, target_modules=list(cfg.lora.target_modules),
                                 exclude_modules=["pooler.dense"] if pooler else None,
                                 modules_to_save=["classifier", "pooler"] if pooler else ["classifier"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, trainable


def train_dataset(lists: list[Candidates], knowledge: list, cfg: RerankerConfig):
    """ListNet: one row per ticket (its candidates, 1 for the right one); BCE: one row per pair."""
    from datasets import Dataset

    columns: dict[str, list] = {"query": [], "docs": [], "labels": []}
    for item in lists:
        columns["query"].append(item.ticket)
        columns["docs"].append(texts_of(item, knowledge, cfg))
        columns["labels"].append([float(i == item.positive) for i in range(len(item.rows))])
    if cfg.train.loss == "listnet":
        return Dataset.from_dict(columns)
    flat = {"query": [], "doc": [], "label": []}
    for query, docs, labels in zip(columns["query"], columns["docs"], columns["labels"]):
        flat["query"] += [query] * len(docs)
        flat["doc"] += docs
        flat["label"] += labels
    return Dataset.from_dict(flat)


def loss_of(cfg: RerankerConfig, model):
    import torch
    from sentence_transformers.cross_encoder import losses

    if cfg.train.loss == "listnet":
        return losses.ListNetLoss(model)
    return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(cfg.mining.negatives)))


def make_trainer(cfg: RerankerConfig, model, dataset, out: Path, callbacks):
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    from training.runs import shared_training_args

    args = CrossEncoderTrainingArguments(
        **shared_training_args(cfg.train, out, device()),
        bf16=device() == "cuda",  # mixed precision on the GPU; weights and the saved adapter stay fp32
        eval_strategy="no",  # validation is the epoch callback's reranking, not a loss
        save_strategy="no",  # the best epoch's adapter is saved by the callback
        dataloader_num_workers=0,
    )
    return CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss_of(cfg, model),
                               callbacks=list(callbacks))


# --- the recipe -----------------------------------------------------------------------------------


def train(cfg: RerankerConfig, home: Path, log: Callable[[str], None] = print, prepared: Prepared | None = None,
          callbacks: Sequence = ()) -> RerankerRun:
    """Run one reranker fine-tune end to end; returns the reranker folder and its metadata."""
    from training.runs import metrics_callback, setup_output, setup_threads
    from training.tracking import make_tracker, tracker_callback
    from training.reranker.epochs import EpochKeeper

    started = time.perf_counter()
    pre = prepared or preflight(cfg)
    setup_threads(cfg)
    log(f"backend: {describe_backend()}")
    log(labelled.describe(pre.data, pre.split))
    out = setup_output(cfg, home, RERANKER_METADATA, "reranker")
    mined = mine(cfg, pre, log)
    log(f"lists: {mined.counts()}")
    if not mined.train:
        raise ConfigError("data: no label has two rows on the knowledge side: no training ticket has a positive")
    in_scope = [item for item in mined.validation if item.in_scope]
    before = order_metrics(in_scope, [np.asarray(item.votes) for item in in_scope])
    append_metrics(out, {"stage": "before", "step": 0, "validation_retriever_top1": before["top1"],
                         "validation_retriever_recall_at_5": before["recall_at_5"]})
    model, trainable = cross_encoder(cfg, pre.base.path, out / "base-view")
    log(f"LoRA r={cfg.lora.r} on {', '.join(cfg.lora.target_modules)} + new head: {trainable:,} trainable parameters")
    tracker = make_tracker(cfg.tracking, home)
    tracker.start(cfg.output.run_name or out.name, {"config": cfg.to_dict()})
    try:
        keeper = EpochKeeper(cfg, model, in_scope, pre.split.knowledge, out, started, tracker, log)
        trainer = make_trainer(cfg, model, train_dataset(mined.train, pre.split.knowledge, cfg), out,
                               [metrics_callback(out / METRICS_FILE, started), tracker_callback(tracker),
                                keeper.callback(), *callbacks])
        train_start = time.perf_counter()
        trainer.train()
        keeper.ensure_saved()
        train_s = time.perf_counter() - train_start
        metadata = finish(cfg, pre, mined, out, keeper, log,
                          {"trainable_parameters": trainable, "steps": trainer.state.global_step,
                           "train_time_s": round(train_s, 1), "epochs_run": trainer.state.epoch,
                           "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r]}, started)
        for name in (RERANKER_METADATA, METRICS_FILE):
            tracker.log_artifact(out / name)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return RerankerRun(out, metadata)


def finish(cfg: RerankerConfig, pre: Prepared, mined: Mined, out: Path, keeper, log, extra: dict,
           started: float) -> dict:
    """Score validation with the kept adapter loaded the product's way, fit the scoring, write
    reranker.json and check the folder reloads through the product's Reranker."""
    import shutil

    shutil.rmtree(out / "base-view", ignore_errors=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    datamodel.fix_adapter_config(out, pre.base.identity)
    model, tokenizer = load_model(pre.base.path, out, quantize=False, device=device())
    logits = score_lists(model, tokenizer, mined.validation, pre.split.knowledge, cfg)
    scoring = fit_scoring(mined.validation, logits, [item.in_scope for item in mined.validation])
    in_scope = [i for i, item in enumerate(mined.validation) if item.in_scope]
    metrics = validation_metrics([mined.validation[i] for i in in_scope], [logits[i] for i in in_scope],
                                 scoring, cfg.train.seed)
    log(f"validation: {summary(metrics)}; alpha {scoring.alpha}")
    append_metrics(out, {"stage": "after", "step": extra["steps"], **datamodel.flat_metrics(metrics)})
    meta = datamodel.metadata(cfg, pre, mined, scoring, metrics, keeper.history, extra, describe_backend())
    datamodel.write(out, meta)
    meta["reload_max_difference"] = reload_check(out, pre.base.path, mined.validation[:8], logits[:8],
                                                 pre.split.knowledge, cfg)
    meta["wall_time_s"] = round(time.perf_counter() - started, 1)
    datamodel.write(out, meta)
    return meta


def reload_check(out: Path, base: Path, lists: list[Candidates], expected: list[np.ndarray], knowledge: list,
                 cfg: RerankerConfig) -> float:
    """Largest logit difference between validation scoring and the product's Reranker (fp32, CPU)
    on a few lists. A mismatch is a bug, not a user error: RuntimeError."""
    reranker = Reranker(out, base=base, quantize=False)
    difference = 0.0
    for item, logits in zip(lists, expected):
        found = reranker.logits(item.ticket, texts_of(item, knowledge, cfg))
        difference = max(difference, float(np.abs(found - logits).max()))
    if difference > RELOAD_TOLERANCE:
        raise RuntimeError(f"the saved reranker in {out} does not reproduce the validation logits "
                           f"(max difference {difference:.2e})")
    return difference
