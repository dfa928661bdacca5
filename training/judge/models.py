"""Backend choice and the trainable model: base (+ 4-bit) + LoRA.

Two backends:
- "unsloth": FastLanguageModel (4-bit when asked or when the checkpoint is bnb-4bit) with
  use_gradient_checkpointing="unsloth"; chosen by "auto" when CUDA is available and unsloth is
  installed. unsloth must be imported before transformers: `training.judge.command` does that by
  calling `import_unsloth_first()` before it imports the trainer.
- "transformers": the base comes from `reasoner.backends.load_model` (the same loader the judge
  uses: the embedded SmolLM2 from its bf16 cache, or a local/cached Hugging Face model, optionally
  4-bit via bitsandbytes), then PEFT adds the LoRA.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from training.config import ConfigError
from training.judge.config import EMBEDDED, TrainConfig
from training.parallel import Parallel

UNSLOTH_DDP = (
    "model.backend = 'unsloth' does not train data-parallel here ({world} processes): Unsloth's own "
    "documentation still calls its multi-GPU support work in progress, and its offloaded gradient "
    "checkpointing and patched kernels were not verified under DDP in this trainer. Use "
    "--set model.backend=\"transformers\" (transformers + PEFT + bitsandbytes; \"auto\" picks it "
    "under torchrun), or train on one GPU with Unsloth")


@dataclass(frozen=True)
class Backend:
    name: str
    """"unsloth" or "transformers"."""
    device: str
    """"cuda" or "cpu"."""
    load_in_4bit: bool
    dtype: str = "float32"
    """Resolved weights/compute dtype: "bfloat16", "float16" or "float32"."""

    def describe(self) -> str:
        quant = " + bitsandbytes 4-bit" if self.load_in_4bit else ""
        lib = "Unsloth FastLanguageModel" if self.name == "unsloth" else "transformers + PEFT"
        return f"{lib}{quant} on {self.device}, {self.dtype}"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_dtype(wanted: str, cuda: bool) -> str:
    """"auto": bfloat16 on a GPU that has it, float16 on an older GPU, float32 on CPU (measured on
    the 2-core AVX2 machine: one SmolLM2 LoRA step at 4 x 256 tokens, 6.5 s in float32, 280 s in
    bfloat16)."""
    if wanted != "auto":
        return wanted
    if not cuda:
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def choose_backend(cfg: TrainConfig, parallel: Parallel = Parallel()) -> Backend:
    """Resolve model.backend = auto/unsloth/transformers against this machine (imports only torch).
    Under a data-parallel launch "auto" means transformers and "unsloth" is refused (UNSLOTH_DDP)."""
    cuda = cuda_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    wanted = cfg.model.backend
    if wanted == "unsloth" and not (cuda and has_unsloth):
        raise ConfigError("model.backend = 'unsloth' needs a CUDA GPU and the unsloth package "
                          f"(CUDA: {cuda}, unsloth installed: {has_unsloth})")
    if wanted == "unsloth" and parallel.distributed:
        raise ConfigError(UNSLOTH_DDP.format(world=parallel.world_size))
    unsloth_ok = cuda and has_unsloth and not parallel.distributed
    name = "unsloth" if wanted == "unsloth" or (wanted == "auto" and unsloth_ok) else "transformers"
    four_bit = cfg.model.load_in_4bit or "bnb-4bit" in cfg.model.base
    if four_bit and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("4-bit loading needs bitsandbytes (pip install '.[gpu]')")
    return Backend(name, "cuda" if cuda else "cpu", four_bit, resolve_dtype(cfg.model.dtype, cuda))


def import_unsloth_first(backend: Backend) -> None:
    """unsloth patches transformers/peft/trl at import: it must come first in the process."""
    if backend.name != "unsloth":
        return
    if "transformers" in sys.modules:
        print("warning: transformers was imported before unsloth; some unsloth speed-ups may be "
              "missing (run `agent-helper train` in a fresh process)", file=sys.stderr)
    import unsloth  # noqa: F401


def checkpointing(cfg: TrainConfig, backend: Backend):
    """What to pass as gradient checkpointing: unsloth takes "unsloth"/False, transformers a bool."""
    mode = cfg.model.gradient_checkpointing
    if backend.name == "unsloth":
        return "unsloth" if mode in ("auto", "on") else False
    return mode == "on"


def torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def model_cache_dir(cfg: TrainConfig, home: Path) -> Path:
    return Path(cfg.model.cache_dir) if cfg.model.cache_dir else Path(home) / "models"


def _load_unsloth(cfg: TrainConfig, backend: Backend, home: Path):
    from unsloth import FastLanguageModel

    name = cfg.model.base
    if name == EMBEDDED:
        from reasoner.embedded import prepare_embedded_cache

        name = str(prepare_embedded_cache(model_cache_dir(cfg, home)))
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=name,
        max_seq_length=cfg.model.max_seq_length,
        dtype=torch_dtype(backend.dtype),
        load_in_4bit=backend.load_in_4bit,
        local_files_only=True,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        bias="none",
        use_gradient_checkpointing=checkpointing(cfg, backend),
        random_state=cfg.train.seed,
        max_seq_length=cfg.model.max_seq_length,
    )
    return model, tokenizer


def load_base(cfg: TrainConfig, backend: Backend, home: Path, parallel: Parallel = Parallel()):
    """(model, tokenizer) through the reasoner's loader: the one place models are read from. Each
    process of a data-parallel launch loads its own copy onto its own GPU (cuda:<local rank>)."""
    from reasoner.backends import ModelConfig, ModelLoadError, load_model

    config = ModelConfig(
        base=cfg.model.base,
        adapter=None,
        load_in_4bit=backend.load_in_4bit,
        use_unsloth=False,
        cache_dir=model_cache_dir(cfg, home),
        device=parallel.device(backend.device),
    )
    try:
        loaded = load_model(config)
    except ModelLoadError as error:
        raise ConfigError(str(error)) from None
    model = loaded.model
    if not backend.load_in_4bit and backend.dtype != "bfloat16":  # the loader reads bf16
        model = model.to(torch_dtype(backend.dtype))
    return model, loaded.tokenizer


def checkpointing_kwargs(parallel: Parallel) -> dict | None:
    """Non-reentrant checkpointing under DDP: the reentrant kind runs the forward without grad, so
    DDP sees each LoRA weight's gradient arrive twice (or never) and stops the backward pass."""
    return {"use_reentrant": False} if parallel.distributed else None


def _add_lora(model, cfg: TrainConfig, backend: Backend, parallel: Parallel):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if backend.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing(cfg, backend),
            gradient_checkpointing_kwargs=checkpointing_kwargs(parallel),
        )
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def trainable_model(cfg: TrainConfig, backend: Backend, home: Path, parallel: Parallel = Parallel()):
    """(peft model in train mode, tokenizer with a chat template and a pad token)."""
    import torch

    from reasoner.prompt import ensure_chat_template

    torch.manual_seed(cfg.train.seed)  # LoRA init is random: same seed, same adapter start
    if backend.name == "unsloth":
        model, tokenizer = _load_unsloth(cfg, backend, home)
    else:
        model, tokenizer = load_base(cfg, backend, home, parallel)
        model = _add_lora(model, cfg, backend, parallel)
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.train()
    return model, tokenizer


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def for_inference(model, backend: Backend):
    """Switch a trained model to fast inference (unsloth) / eval mode with a KV cache."""
    if backend.name == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    config = getattr(model, "config", None)
    if config is not None:
        config.use_cache = True
    return model
