"""Command line for the training data.

    python -m training.judge.data build --sources-dir ../shared/datasets --out runs/data --seed 13
    python -m training.judge.data feedback EXPORT.jsonl --out runs/feedback.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from training import datasets as sources
from training.judge.data import build
from training.datasets import DataError
from training.judge.data.schema import write_examples


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.judge.data")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="labelled datasets -> train.jsonl, validation.jsonl, manifest.json")
    b.add_argument("--sources-dir", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--sources", default=",".join(sources.DEFAULT_SOURCES),
                   help="comma-separated; known: " + ", ".join(sources.READERS))
    b.add_argument("--embedder", choices=("shipped", "packaged", "hashing"), default="shipped",
                   help="shipped = the product's retriever embedder (all-MiniLM-L6-v2 + the adapter in "
                        "data/models/embedder-minilm, so the judge trains on the similarities it will be shown); "
                        "packaged = all-MiniLM-L6-v2 alone; hashing = fast stand-in for dry runs")
    defaults = build.BuildOptions()
    for name in ("seed", "top_k", "max_train_per_source", "max_validation_per_source", "max_answer_chars", "label_votes"):
        b.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("validation_share", "none_share", "removed_true_rate", "max_first_share",
                 "pair_rate", "random_negative_share"):
        b.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    b.add_argument("--formats", default=",".join(defaults.formats))
    b.add_argument("--exclude", type=Path, nargs="*", default=[], metavar="JSONL",
                   help='held-out ticket files (lines {"ticket": ...}): their texts are left out entirely')
    b.add_argument("--embedding-cache", type=Path,
                   help="folder for cached sentence vectors (reused by later builds with the same embedder)")
    f = sub.add_parser("feedback", help="web-page feedback export -> examples")
    f.add_argument("path", type=Path)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--seed", type=int, default=13)
    f.add_argument("--validation-share", type=float, default=0.1)
    return parser


def _embedder(name: str):
    if name == "hashing":
        from training.judge.data.mining import hashing_embed

        return hashing_embed, "hashing-256"
    from retriever.embedder import Embedder, default_adapter_path

    embedder = Embedder(adapter=default_adapter_path() if name == "shipped" else None)
    return embedder.embed, f"{embedder.name}@{embedder.hash}"


def _options(args) -> build.BuildOptions:
    fields = build.BuildOptions.__dataclass_fields__
    values = {k: getattr(args, k) for k in fields if k != "formats"}
    return build.BuildOptions(**values, formats=tuple(x for x in args.formats.split(",") if x))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_build(args) -> int:
    names = [n for n in args.sources.split(",") if n]
    loaded = sources.load(names, args.sources_dir)
    if args.exclude:
        from training.splits import text_key

        held_out = {text_key(json.loads(line)["ticket"]) for path in args.exclude
                    for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
        loaded = sources.without_texts(loaded, held_out)
    excluded = {str(path): _sha256(path) for path in args.exclude}
    embed, embedder_name = _embedder(args.embedder)
    if args.embedding_cache:
        from training.judge.data.mining import CachedEmbed

        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in embedder_name)
        embed = CachedEmbed(embed, args.embedding_cache / f"{safe}.npz")
    result = build.build(loaded, _options(args), embed, embedder_name)
    args.out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, examples in (("train", result.train), ("validation", result.validation)):
        path = args.out / f"{split}.jsonl"
        write_examples(path, examples)
        files[path.name] = {"examples": len(examples), "sha256": _sha256(path)}
    manifest = {**result.manifest, "files": files, "excluded_ticket_files": excluded}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"train {len(result.train)} / validation {len(result.validation)} examples -> {args.out}")
    return 0


def run_feedback(args) -> int:
    from training.judge.data.feedback import load_feedback

    loaded = load_feedback(args.path, seed=args.seed, validation_share=args.validation_share)
    write_examples(args.out, loaded.examples)
    print(f"{len(loaded.examples)} examples -> {args.out} ({loaded.skipped} skipped: chosen id not shown)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run_build(args) if args.command == "build" else run_feedback(args)
    except (DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
