"""Data-parallel training without a GPU: the rank arithmetic (who writes, where the model goes, how a
step's examples split), the backend rules under torchrun, and a real 2-process run of the tiny Llama
on gloo that must leave one run folder with the same files as a one-process run (about a minute)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from training.config import ConfigError  # noqa: E402
from training.judge.config import load_config  # noqa: E402
from training.parallel import BatchPlan, Parallel, check_visible_gpus, plan_batch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "training" / "judge" / "data" / "sample"
CONFIG = """recipe = "judge"
[model]
base = "{base}"
backend = "auto"
dtype = "float32"
max_seq_length = 768
[lora]
r = 4
alpha = 8
[data]
train = "{sample}/train.jsonl"
validation = "{sample}/validation.jsonl"
max_train_examples = 32
max_validation_examples = 8
[train]
epochs = 1
max_steps = 4
batch_size = 2
learning_rate = 1e-3
warmup_ratio = 0.0
eval_steps = 2
logging_steps = 1
num_threads = 1
[eval]
method = "teacher_forced"
max_examples = 4
[tracking]
backend = "none"
"""


def test_only_rank_0_writes_and_each_rank_owns_its_gpu():
    ranks = [Parallel(world_size=4, rank=r, local_rank=r % 2) for r in range(4)]  # two machines of two GPUs
    assert [p.writes for p in ranks] == [True, False, False, False]
    assert all(p.distributed for p in ranks)
    assert [p.device("cuda") for p in ranks] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert [p.device_map("cuda") for p in ranks] == [{"": 0}, {"": 1}, {"": 0}, {"": 1}]
    assert ranks[3].device("cpu") == "cpu" and ranks[3].device_map("cpu") == {"": "cpu"}
    alone = Parallel()
    assert alone.writes and not alone.distributed and alone.device("cuda") == "cuda:0"


def test_batch_arithmetic():
    # By default N GPUs take N times the examples per step (the per-device batch is the config's).
    assert plan_batch(2, 1, 0, 1) == BatchPlan(2, 1, 1) and plan_batch(2, 1, 0, 2).global_batch == 4
    assert plan_batch(4, 3, 0, 8).global_batch == 96
    # global_batch keeps a one-GPU step on N GPUs by deriving the accumulation.
    assert plan_batch(2, 7, 16, 2) == BatchPlan(2, 4, 2)
    assert plan_batch(2, 1, 16, 8) == BatchPlan(2, 1, 8)
    with pytest.raises(ConfigError, match="global_batch = 6 is not a multiple"):
        plan_batch(2, 1, 6, 2)
    assert "8 examples per step = 2 per device x 2 accumulated x 2 devices" in plan_batch(2, 9, 8, 2).describe()


def test_a_single_process_must_not_see_several_gpus():
    check_visible_gpus(Parallel(), 1)
    check_visible_gpus(Parallel(2, 0, 0), 2)
    check_visible_gpus(Parallel(2, 1, 1), 8)  # torchrun on a bigger machine: each rank takes its own
    with pytest.raises(ConfigError, match="torchrun --standalone --nproc_per_node 2"):
        check_visible_gpus(Parallel(), 2)


@pytest.fixture
def gpu_with_unsloth(monkeypatch):
    """What choose_backend sees on a GPU machine with unsloth installed (no GPU needed)."""
    from training.judge import models

    found = importlib.util.find_spec
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(models, "resolve_dtype", lambda wanted, cuda: "bfloat16")
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: object() if name in ("unsloth", "bitsandbytes") else found(name, *a))


def _config(tmp_path: Path, backend: str):
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(base=tmp_path, sample=SAMPLE).replace('backend = "auto"', f'backend = "{backend}"'))
    return load_config(path)


def test_unsloth_is_not_run_data_parallel(tmp_path, gpu_with_unsloth):
    from training.judge.models import choose_backend

    assert choose_backend(_config(tmp_path, "auto")).name == "unsloth"
    assert choose_backend(_config(tmp_path, "auto"), Parallel(2, 1, 1)).name == "transformers"
    assert choose_backend(_config(tmp_path, "transformers"), Parallel(2, 0, 0)).name == "transformers"
    with pytest.raises(ConfigError, match='model.backend="transformers"'):
        choose_backend(_config(tmp_path, "unsloth"), Parallel(2, 0, 0))


def test_ddp_settings_reach_the_trainer(tmp_path):
    from training.judge.models import Backend
    from training.judge.sft import sft_config

    cfg = _config(tmp_path, "transformers")
    backend = Backend("transformers", "cpu", False)
    alone = sft_config(cfg, backend, tmp_path)
    assert alone.gradient_accumulation_steps == 1 and alone.per_device_train_batch_size == 2
    spread = sft_config(cfg, backend, tmp_path, batch=BatchPlan(2, 4, 2), parallel=Parallel(2, 1, 1))
    assert spread.gradient_accumulation_steps == 4 and spread.per_device_train_batch_size == 2
    # every LoRA weight gets a gradient each step; checkpointing must not re-enter under DDP
    assert spread.ddp_find_unused_parameters is False
    assert spread.gradient_checkpointing_kwargs == {"use_reentrant": False}


def test_benchmark_variants_get_their_own_folders():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import train_gpu

    names = {train_gpu.variant_name("transformers", 1, []), train_gpu.variant_name("transformers", 2, []),
             train_gpu.variant_name("unsloth", 1, []),
             train_gpu.variant_name("unsloth", 1, ['model.gradient_checkpointing="off"'])}
    assert names == {"transformers-1gpu", "transformers-2gpu", "unsloth-1gpu", "unsloth-1gpu-gradient_checkpointing-off"}
    args = train_gpu._parser().parse_args(["--gpus", "2", "--out", "x"])
    assert args.steps == 30
    command = train_gpu._launch(args, "transformers")
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=2" in command


def _run_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_two_cpu_processes_write_one_run_folder_like_one_process(tmp_path):
    from training.judge.tiny import save_tiny
    from training.judge.trainer import train

    texts = (SAMPLE / "train.jsonl").read_text().splitlines()[:200]
    base = save_tiny(tmp_path / "tiny", texts, hidden=32, layers=2)
    config = tmp_path / "tiny-ddp.toml"
    config.write_text(CONFIG.format(base=base, sample=SAMPLE))

    alone = train(load_config(config, ['output.dir="' + str(tmp_path / "alone") + '"']), home=tmp_path / "home1",
                  log=lambda line: None)

    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "ui.cli", "--home", str(tmp_path / "home2"), "train", "--config", str(config)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("adapter: ") == 1  # rank 0 alone reports

    runs = list((tmp_path / "home2" / "runs").iterdir())
    assert len(runs) == 1  # both ranks agreed on the timestamped folder; only one wrote
    assert _run_files(runs[0]) == _run_files(alone.out_dir)
    meta = json.loads((runs[0] / "agent_helper.json").read_text())
    assert meta["parallel"] == {"world_size": 2, "per_device_batch": 2, "grad_accum": 1, "global_batch": 4}
    assert alone.metadata["parallel"]["world_size"] == 1
    assert meta["steps"] == alone.steps == 4
    records = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # one writer: no line twice
    assert records[-1]["stage"] == "final"
