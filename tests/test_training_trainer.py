"""The real trainer, end to end, on a tiny randomly initialised Llama (CPU, about a minute)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import random  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from training.judge.config import load_config  # noqa: E402
from training.judge.data import build, mining  # noqa: E402
from training.judge.data.schema import read_examples, write_examples  # noqa: E402

BASE_CONFIG = """recipe = "judge"
[model]
base = "tiny"
backend = "transformers"
dtype = "float32"
max_seq_length = 768
[lora]
r = 4
alpha = 8
[data]
train = "{train}"
validation = "{validation}"
[train]
epochs = 1
max_steps = {max_steps}
batch_size = 4
learning_rate = {lr}
warmup_ratio = 0.0
eval_steps = {eval_steps}
logging_steps = 1
early_stopping_patience = {patience}
num_threads = 2
[eval]
method = "{method}"
max_examples = 4
max_new_tokens = 6
[tracking]
backend = "{tracking}"
system_metrics = false
[output]
dir = "{out}"
keep_checkpoints = {keep}
"""


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from test_training_data import synthetic_source

    from training.judge.tiny import save_tiny

    folder = tmp_path_factory.mktemp("trainer")
    result = build.build([synthetic_source(10)], build.BuildOptions(seed=3, validation_share=0.3),
                         mining.hashing_embed, "hashing")
    write_examples(folder / "train.jsonl", result.train)
    write_examples(folder / "validation.jsonl", result.validation)
    texts = (folder / "train.jsonl").read_text().splitlines() + (folder / "validation.jsonl").read_text().splitlines()
    save_tiny(folder / "tiny", texts, hidden=32, layers=2)
    return folder


def write_config(folder: Path, name: str, **values) -> Path:
    settings = dict(train="train.jsonl", validation="validation.jsonl", max_steps=4, lr=1e-3, eval_steps=2,
                    patience=3, method="teacher_forced", tracking="none", out=f"runs/{name}", keep="false")
    settings.update(values)
    path = folder / f"{name}.toml"
    path.write_text(BASE_CONFIG.format(**settings))
    return path


def test_trains_end_to_end_and_the_reasoner_loads_the_adapter(workspace, tmp_path):
    from reasoner.backends import ModelConfig, load_model
    from reasoner.judge import Judge, JudgeConfig
    from training.judge.trainer import train

    cfg = load_config(write_config(workspace, "e2e", method="judge", tracking="mlflow"))
    result = train(cfg, home=tmp_path / "app", log=lambda line: None)
    out = result.out_dir
    assert out == workspace / "runs" / "e2e"
    for name in ("adapter_config.json", "adapter_model.safetensors", "agent_helper.json", "metrics.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "checkpoints").exists()

    meta = json.loads((out / "agent_helper.json").read_text())
    for key in ("prompt_version", "prompt_format", "base_model", "calibration", "metrics", "data_hash", "config",
                "backend", "wall_time_s"):
        assert key in meta, key
    assert {"threshold", "judge_weight", "retriever_none_similarity"} <= set(meta["calibration"])
    assert meta["backend"] == "transformers" and meta["prompt_format"] == "listwise"
    assert meta["metrics"]["verdicts"]["method"] == "judge"
    assert meta["metrics"]["verdicts"]["combined"]["n"] == 4
    assert meta["steps"] == 4 and meta["trainable_parameters"] > 0

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records) and sum("eval_loss" in r for r in records) == 2
    assert records[-1]["stage"] == "final"

    loaded = load_model(ModelConfig(base=str(workspace / "tiny"), adapter=out, device="cpu"))
    assert loaded.adapter_metadata["data_hash"] == meta["data_hash"]
    judge_config = JudgeConfig.from_metadata(loaded.adapter_metadata)
    assert judge_config.threshold == meta["calibration"]["threshold"] and judge_config.top_k == 5
    example = read_examples(workspace / "validation.jsonl")[0]
    verdict = Judge(loaded, replace(judge_config, max_new_tokens=4)).decide(example.ticket, example.prompt_candidates())
    assert 0.0 <= verdict.confidence <= 1.0

    import mlflow

    runs = mlflow.search_runs(experiment_names=["agent-helper-judge"],
                              filter_string="", output_format="list")
    assert runs and {"loss", "eval_loss"} <= set(runs[0].data.metrics)
    assert (tmp_path / "app" / "mlruns" / "mlflow.db").is_file()


def _unlearnable_validation(folder: Path) -> None:
    """Validation reasoning made of bytes no training target contains (non-ASCII letters): the
    more the model fits its training targets, the less likely these get, so the validation loss
    soon only rises."""
    rng = random.Random(0)
    letters = "ΩΨΦЖЯЮ☃♞"
    validation = [replace(e, reasoning="".join(rng.choice(letters) for _ in range(40)))
                  for e in read_examples(folder / "validation.jsonl")[:8]]
    write_examples(folder / "stubborn.jsonl", validation)


def test_early_stopping_restores_the_best_checkpoint(workspace, tmp_path):
    from safetensors.torch import load_file

    from training.judge.trainer import train

    _unlearnable_validation(workspace)
    # The validation loss first falls (the chat structure and answer line are shared), then rises as
    # the model puts its mass on training tokens. At 3e-3 that turn depended on the exact data (on
    # some it never came within 20 steps); at 3e-2 it comes within a few steps.
    cfg = load_config(write_config(workspace, "early", validation="stubborn.jsonl", max_steps=20, lr=3e-2,
                                   eval_steps=1, patience=2, method="none", keep="true"))
    result = train(cfg, home=tmp_path / "app", log=lambda line: None)
    assert result.stopped_early and result.steps < 20
    records = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
    assert result.best_step == min(losses, key=losses.get) < result.steps
    best = load_file(result.out_dir / "checkpoints" / f"checkpoint-{result.best_step}" / "adapter_model.safetensors")
    saved = load_file(result.out_dir / "adapter_model.safetensors")
    assert best.keys() == saved.keys()
    assert all((best[k] == saved[k]).all() for k in best)


def test_calibration_decides_exactly_like_the_judge():
    from reasoner.verdict import combine
    from training.judge import evaluation

    rng = random.Random(1)
    judged = []
    for _ in range(60):
        k = rng.randint(1, 5)
        raw = [rng.random() for _ in range(k + 1)]
        judged.append(evaluation.Judged(tuple(raw), tuple(sorted((rng.uniform(0.2, 0.9) for _ in range(k)), reverse=True)),
                                        rng.randint(0, k), tuple(f"l{i}" for i in range(k))))
    for params in [evaluation.Calibration(0.3, 0.4, 0.05, 0.5), evaluation.Calibration(0.8, 0.1, 0.02, 0.6)]:
        ours = evaluation.predictions(judged, params)
        theirs = []
        for j in judged:
            c = combine(list(j.judge), list(j.similarities), judge_weight=params.judge_weight,
                        threshold=params.threshold, temperature=params.retriever_temperature,
                        none_similarity=params.retriever_none_similarity)
            theirs.append(0 if c.escalate else c.choice)
        assert ours == theirs
    calibration, metrics = evaluation.calibrate(judged)
    assert metrics["accuracy"] >= evaluation.verdict_metrics(judged, evaluation.argmax_predictions(judged))["accuracy"] - 1e-9
    assert 0 <= calibration.threshold <= 1


def test_a_judge_gets_a_weight_only_where_it_adds_accuracy():
    from training.judge import evaluation

    retriever = evaluation.Calibration(0.0, 0.0, 0.02, 0.45)
    golds = [1, 2] * 10  # near-ties the retriever always gives to candidate 1: half of them wrong

    def judged(vote):
        return [evaluation.Judged(tuple(float(i == vote(g)) for i in range(3)), (0.8, 0.79), g, ("a", "b"))
                for g in golds]

    right = evaluation.calibrate_weight(judged(lambda g: g), retriever)
    wrong = evaluation.calibrate_weight(judged(lambda g: 3 - g), retriever)
    assert 0 < right.judge_weight < 1 and evaluation.predictions(judged(lambda g: g), right) == golds
    assert wrong.judge_weight == 0.0  # adds nothing: weighted out
    assert (right.threshold, right.retriever_temperature, right.retriever_none_similarity) == (0.0, 0.02, 0.45)


def test_completion_loss_equals_the_models_own_loss(workspace):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.judge.trainer import completion_loss

    model = AutoModelForCausalLM.from_pretrained(workspace / "tiny", dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (2, 12))
    labels = ids.clone()
    labels[:, :7] = -100  # the prompt carries no loss
    labels[1, 10:] = -100
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0  # padding at the end of the second row
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    expected = model(**inputs).loss
    assert torch.allclose(completion_loss(model, inputs), expected, atol=1e-5)
    counted = int((labels[:, 1:] != -100).sum())
    assert torch.allclose(completion_loss(model, inputs, num_items_in_batch=14), expected * counted / 14, atol=1e-5)
