"""The in-process judge as one GGUF file, for llama.cpp's server: `export_gguf(loaded, path)`.

llama.cpp cannot apply our LoRA adapter to the de-quantized weights the in-process judge computes
with, so the adapter is merged (as `load_model` does) and the merged float32 weights are written
out. Everything else is copied from the embedded model's own GGUF: the hyperparameters and, above
all, the tokenizer. (llama.cpp's converter, run on the merged model that transformers saves,
takes SmolLM2's byte-level BPE vocabulary for a SentencePiece one and tokenizes prompts wrongly.)
So the file holds the embedded model's tensors, by name and order, with the judge's values.
"""

from __future__ import annotations

import os
from pathlib import Path

from reasoner.backends import LoadedModel, ModelLoadError
from reasoner.embedded import EMBEDDED, EMBEDDED_GGUF, embedded_model_folder

_SKIPPED_KEYS = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version")
"""Written by GGUFWriter itself, or no longer true of float32 tensors."""


def export_gguf(loaded: LoadedModel, out: Path) -> Path:
    """Write the judge's merged float32 weights as a GGUF at `out` (atomically); returns `out`."""
    import gguf

    _check_exportable(loaded)
    template = gguf.GGUFReader(embedded_model_folder() / EMBEDDED_GGUF)
    arch = template.fields["general.architecture"].contents()
    config = loaded.model.config
    state = loaded.model.state_dict()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    by_gguf_name = {names.get_name(name, try_suffixes=(".weight", ".bias")): name for name in state}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}-{os.getpid()}")
    writer = gguf.GGUFWriter(temp, arch=arch, endianess=template.endianess)
    try:
        for field in template.fields.values():
            if not field.name.startswith(_SKIPPED_KEYS):
                _copy_field(writer, field)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        for tensor in template.tensors:
            name = by_gguf_name.get(tensor.name)
            if name is None:
                raise ModelLoadError(f"the judge has no weight for the GGUF tensor {tensor.name}")
            writer.add_tensor(tensor.name, _gguf_layout(name, state[name], config))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        temp.replace(out)
    finally:
        temp.unlink(missing_ok=True)
    return out


def _check_exportable(loaded: LoadedModel) -> None:
    if loaded.info.base != EMBEDDED:
        raise ModelLoadError("only the embedded model is exported to GGUF; serve other bases with their adapter "
                             "directly (vLLM --enable-lora --lora-modules, see README)")
    if type(loaded.model).__name__.startswith("Peft"):
        raise ModelLoadError("the adapter must be merged into the weights to export them (merge_adapter=True)")


def _copy_field(writer, field) -> None:
    import gguf

    kind = field.types[0]
    sub_kind = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
    writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_kind)


def _gguf_layout(name: str, tensor, config):
    """The weight as llama.cpp stores it: float32, and q/k rows in the order of its rotary
    embedding (llama.cpp's converter permutes them so; transformers undoes it when it reads a GGUF)."""
    weights = tensor.detach().float().cpu().numpy()
    heads = config.num_attention_heads
    if name.endswith("q_proj.weight"):
        return _permute(weights, heads)
    if name.endswith("k_proj.weight"):
        return _permute(weights, getattr(config, "num_key_value_heads", None) or heads)
    return weights


def _permute(weights, heads: int):
    """convert_hf_to_gguf.py's LlamaModel.permute: per head, interleave the rotary halves."""
    rows = weights.shape[0]
    return (weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape).copy())


__all__ = ["export_gguf"]
