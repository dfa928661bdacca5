"""`python -m training --config training/configs/NAME.toml` (also `agent-helper train --config …`).

A config with an `[embedder]` table fine-tunes the retriever's embedding model (training/embedder/);
any other config fine-tunes the judge.

Order matters here: the config, data files, base model and tracker are checked first (cheap,
clear errors), then the backend is chosen, and unsloth, when chosen, is imported before anything
imports transformers (it patches transformers, peft and trl at import).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.config import ConfigError, load_config
from training.embedder.config import is_embedder_config

DEFAULT_HOME = Path(".agent-helper")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Fine-tune the judge (LoRA / QLoRA), or the retriever's embedding model for a config "
                    "with an [embedder] table.")
    parser.add_argument("--config", type=Path, required=True, help="training/configs/NAME.toml")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME,
                        help="app home: runs/, mlruns/ and the model cache live here (default ./.agent-helper)")
    parser.add_argument("--out", help="run folder (same as --set output.dir=…)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=20 (repeatable)")
    parser.add_argument("--check", action="store_true", help="validate config, data and base model, then stop")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = list(args.overrides) + ([f"output.dir={json.dumps(args.out)}"] if args.out else [])
    try:
        if is_embedder_config(args.config):  # an [embedder] table: the retriever's embedding model
            from training.embedder.command import run

            return run(args.config, args.home, overrides, args.check)
        cfg = load_config(args.config, overrides)
        from training.trainer import preflight  # no torch/transformers import yet

        checked = preflight(cfg)
        from training.models import choose_backend, import_unsloth_first

        backend = choose_backend(cfg)
        print(f"backend: {backend.describe()}", flush=True)
        if args.check:
            print(f"config OK: {len(checked.examples.train)} training / {len(checked.examples.validation)} "
                  f"validation examples; base model from {checked.base_source}")
            return 0
        import_unsloth_first(backend)
        from training.trainer import train

        result = train(cfg, args.home, backend=backend, checked=checked)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _report(result)
    return 0


def _report(result) -> None:
    meta = result.metadata
    combined = (meta["metrics"].get("verdicts") or {}).get("combined") or {}
    print(f"adapter: {result.out_dir}")
    print(f"steps {result.steps} (best {result.best_step}{', stopped early' if result.stopped_early else ''}), "
          f"best eval loss {meta['metrics']['best_eval_loss']}, wall time {meta['wall_time_s']} s")
    if combined:
        print(f"validation (judge + retriever): accuracy {combined.get('accuracy'):.3f}, "
              f"none recall {combined.get('none_recall'):.3f}; threshold {meta['threshold']}, "
              f"judge_weight {meta['judge_weight']}")


if __name__ == "__main__":
    sys.exit(main())
