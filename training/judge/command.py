"""The judge recipe from the command line (`agent-helper train --config` a `recipe = "judge"` TOML):
check, train, and print what came out.

Order matters here: the config, data files, base model and tracker are checked first (cheap,
clear errors), then the backend is chosen, and unsloth, when chosen, is imported before anything
imports transformers (it patches transformers, peft and trl at import). Under torchrun every process
runs this; only rank 0 prints and writes (training/parallel.py).
"""

from __future__ import annotations

from pathlib import Path

from training.judge.config import TrainConfig


def run(cfg: TrainConfig, home: Path, check: bool = False) -> int:
    from training.judge.models import choose_backend, cuda_available, import_unsloth_first
    from training.judge.trainer import preflight  # no torch/transformers import yet
    from training.parallel import current, finish

    checked = preflight(cfg)
    parallel = current(cuda_available())  # under torchrun: this process's rank, and its GPU bound
    backend = choose_backend(cfg, parallel)
    if parallel.writes:
        print(f"backend: {backend.describe()}; {parallel.describe()}", flush=True)
    if check:
        if parallel.writes:
            print(f"config OK: {len(checked.examples.train)} training / {len(checked.examples.validation)} "
                  f"validation examples; base model from {checked.base_source}")
        return 0
    import_unsloth_first(backend)
    from training.judge.trainer import train

    result = train(cfg, home, backend=backend, checked=checked, parallel=parallel)
    finish(parallel)  # the process group this command started (through `current`) ends with it
    report(result)
    return 0


def report(result) -> None:
    if not result.wrote:  # another rank of a data-parallel launch: rank 0 reports
        return
    meta = result.metadata
    combined = (meta["metrics"].get("verdicts") or {}).get("combined") or {}
    print(f"adapter: {result.out_dir}")
    print(f"steps {result.steps} (best {result.best_step}{', stopped early' if result.stopped_early else ''}), "
          f"best eval loss {meta['metrics']['best_eval_loss']}, wall time {meta['wall_time_s']} s")
    if combined:
        calibration = meta["calibration"]
        print(f"validation (judge + retriever): accuracy {combined.get('accuracy'):.3f}, "
              f"none recall {combined.get('none_recall'):.3f}; threshold {calibration['threshold']}, "
              f"judge_weight {calibration['judge_weight']}")
