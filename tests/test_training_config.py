"""Config errors are caught, with a clear message, before any model loads."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from ui.cli import main as cli_main  # noqa: E402
from training.config import ConfigError, parse_override  # noqa: E402
from training.judge.config import load_config  # noqa: E402
from training.judge.data import build, mining  # noqa: E402
from training.judge.data.schema import write_examples  # noqa: E402
from training.judge.trainer import preflight  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def data(tmp_path):
    from test_training_data import synthetic_source

    result = build.build([synthetic_source()], build.BuildOptions(seed=3, validation_share=0.3),
                         mining.hashing_embed, "hashing")
    write_examples(tmp_path / "train.jsonl", result.train)
    write_examples(tmp_path / "validation.jsonl", result.validation)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return tmp_path


def write_config(folder: Path, body: str) -> Path:
    path = folder / "run.toml"
    path.write_text('recipe = "judge"\n[model]\nbase = "model"\n[data]\ntrain = "train.jsonl"\nvalidation = "validation.jsonl"\n'
                    "[tracking]\nbackend = \"none\"\n" + body)
    return path


def test_valid_config_resolves_paths_against_its_folder(data):
    cfg = load_config(write_config(data, "[train]\nepochs = 3\nlearning_rate = 1e-4\n"))
    assert cfg.data.train == str(data / "train.jsonl")
    assert cfg.model.base == str(data / "model")
    assert cfg.train.epochs == 3.0 and isinstance(cfg.train.epochs, float)
    checked = preflight(cfg)
    assert checked.base_source == "folder" and checked.examples.train


@pytest.mark.parametrize(
    "body, message",
    [
        ("[train]\nepoch = 2\n", "unknown key.*train.epoch"),
        ("[trian]\nepochs = 2\n", "unknown section.*trian"),
        ("[train]\nbatch_size = \"4\"\n", "train.batch_size must be an integer"),
        ("[train]\nepochs = true\n", "train.epochs must be a number"),
        ("[lora]\ntarget_modules = \"q_proj\"\n", "lora.target_modules must be a list of a string"),
        ("[lora]\ntarget_modules = [\"qkv\"]\n", "lora.target_modules must be a non-empty subset"),
        ("[eval]\nmethod = \"guess\"\n", "eval.method must be one of"),
        ("[train]\nbatch_size = 0\n", "train.batch_size must be > 0"),
        ("[data]\ntop_k = 12\n", "data.top_k must be 1..9"),
    ],
)
def test_bad_values_are_named(data, body, message):
    text = write_config(data, "").read_text()
    if body.startswith("[data]"):
        text = text.replace("[data]\n", body)
    else:
        text += body
    (data / "run.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(data / "run.toml")


def test_not_toml_and_missing_config(data):
    (data / "bad.toml").write_text("[train\nepochs=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(data / "bad.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(data / "nope.toml")


def test_missing_data_file(data):
    (data / "validation.jsonl").unlink()
    with pytest.raises(ConfigError, match="validation.jsonl: data file not found"):
        preflight(load_config(write_config(data, "")))


def test_malformed_jsonl_row(data):
    with (data / "train.jsonl").open("a") as handle:
        handle.write('{"format": "listwise", "ticket": "x"}\n')
    lines = len((data / "train.jsonl").read_text().splitlines())
    with pytest.raises(ConfigError, match=rf"train.jsonl:{lines}: missing key 'candidates'"):
        preflight(load_config(write_config(data, "")))


def test_empty_jsonl(data):
    (data / "train.jsonl").write_text("")
    with pytest.raises(ConfigError, match="no examples"):
        preflight(load_config(write_config(data, "")))


def test_filter_leaving_nothing(data):
    with pytest.raises(ConfigError, match="no listwise examples left"):
        preflight(load_config(write_config(data, ""), ['data.sources=["banking77"]']))


@pytest.mark.parametrize("base, message", [
    ("missing-folder", "nor in the Hugging Face cache"),
    ("./nope", "no such model folder"),
    ("someorg/some-model-not-cached", "nor in the Hugging Face cache"),
])
def test_base_model_not_found(data, base, message):
    cfg = load_config(write_config(data, ""), [f'model.base="{base}"'])
    with pytest.raises(ConfigError, match=message):
        preflight(cfg)


def test_folder_without_config_json(data):
    (data / "empty-model").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        preflight(load_config(write_config(data, ""), [f"model.base=\"{data / 'empty-model'}\""]))


def test_overrides():
    assert parse_override("train.max_steps=10") == ("train", "max_steps", 10)
    assert parse_override('data.sources=["a", "b"]') == ("data", "sources", ["a", "b"])
    assert parse_override("output.dir=runs/x") == ("output", "dir", "runs/x")
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        parse_override("max_steps=3")


def test_cli_reports_errors_and_exits_2(data, capsys):
    path = write_config(data, "[train]\nwarmup = 1\n")
    assert cli_main(["--home", str(data / "home"), "train", "--config", str(path)]) == 2
    assert "unknown key(s) train.warmup" in capsys.readouterr().err


def test_cli_check_stops_before_training(data, capsys):
    path = write_config(data, "")
    assert cli_main(["--home", str(data / "home"), "train", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "backend: transformers + PEFT on cpu" in out and "config OK" in out
    assert not (data / "home").exists()


def test_shipped_configs_parse():
    for name in ("smollm2-135m-lora.toml", "llama3-8b-qlora.toml", "tiny-test.toml"):
        cfg = load_config(REPO / "training" / "configs" / name)
        assert cfg.lora.r == 16 or name == "tiny-test.toml"
    gpu = load_config(REPO / "training" / "configs" / "llama3-8b-qlora.toml")
    assert gpu.model.base == "unsloth/llama-3-8b-bnb-4bit"
    assert (gpu.train.batch_size, gpu.train.grad_accum, gpu.train.epochs) == (2, 1, 2.0)
    assert gpu.data.max_train_examples == 1000 and gpu.train.early_stopping_patience > 0
    assert len(gpu.lora.target_modules) == 7
    cpu = load_config(REPO / "training" / "configs" / "smollm2-135m-lora.toml")
    assert cpu.model.base == "embedded" and Path(cpu.data.train).is_file()
