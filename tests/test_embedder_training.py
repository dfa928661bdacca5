"""Embedder fine-tuning (training/embedder): a tiny real fine-tune of the packaged MiniLM through
the trainer's entry point, the adapter loaded by the product's Embedder, and config errors that
come before any model loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ui.cli import main as cli_main
from training.labelled import DataSection, LabelledData, LabelledText, split
from training.embedder.pairs import Triplet

# Two labels whose tickets differ by a few words while the product named dominates the text:
# the base model's nearest neighbour is nearly always the *other* label's ticket about the same item.
ITEMS = ["hiking boots", "headphones", "espresso machine", "mattress", "mountain bike", "standing desk",
         "winter scarf", "television", "frying pan", "camping tent", "office chair", "wrist watch"]
TEMPLATES = {
    "charged_twice": ["I was charged twice for the {item}", "the {item} payment went through twice",
                      "my card was billed two times for the {item}"],
    "not_charged": ["I was not charged for the {item}", "the {item} payment did not go through",
                    "my card was never billed for the {item}"],
}
OUT_OF_SCOPE = ["what is the weather like in Paris tomorrow", "tell me a joke about cats",
                "who won the football match last night", "how tall is mount everest", "recommend a good novel",
                "what time is it in Tokyo", "how do I bake sourdough bread", "translate good morning into Spanish",
                "what is the capital of Australia", "play some relaxing music", "set an alarm for 7 am",
                "how many calories are in an apple"]


def write_tickets(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "label"])
        for label, templates in TEMPLATES.items():
            for item in ITEMS:
                writer.writerows([t.format(item=item), f"{label} resolution", label] for t in templates)
        writer.writerows([text, "", "oos"] for text in OUT_OF_SCOPE)
    return path


def write_config(folder: Path, data: str = 'files = ["tickets.csv"]', extra: str = "") -> Path:
    path = folder / "embedder.toml"
    path.write_text(f"""recipe = "embedder"

[embedder]
base = "packaged"

[data]
{data}
validation_share = 0.25

[train]
epochs = 1
batch_size = 16
learning_rate = 1e-3
logging_steps = 5
{extra}

[tracking]
backend = "none"
""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("embedder")
    write_tickets(folder / "tickets.csv")
    out = folder / "adapter"
    code = cli_main(["--home", str(folder / "home"), "train", "--config", str(write_config(folder)), "--out", str(out)])
    assert code == 0
    return out


def test_fine_tune_fixes_labels_the_base_model_confuses(trained):
    meta = json.loads((trained / "embedder.json").read_text())
    before, after = meta["metrics"]["before"], meta["metrics"]["after"]
    assert before["top1"] < 0.5, before  # the construction fools the base model
    assert after["top1"] >= before["top1"] + 0.3, (before, after)
    assert after["recall_at_5"] >= before["recall_at_5"]
    assert meta["pairs"]["triplets"] > 0 and meta["pairs"]["with_hard_negative"] == meta["pairs"]["triplets"]
    assert meta["base_model"]["name"] == "all-MiniLM-L6-v2" and meta["data"]["hash"]
    assert meta["seed"] == 13 and meta["wall_time_s"] > 0 and meta["reload_max_difference"] < 1e-4
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records)
    assert [r["stage"] for r in records if "stage" in r] == ["before", "after"]


def test_adapter_loads_in_the_product_embedder(trained):
    from retriever.embedder import Embedder, shared_embedder

    assert (trained / "adapter_model.safetensors").stat().st_size < 5_000_000  # LoRA only, not the model
    tuned = Embedder(adapter=trained)
    assert tuned.escalate_below is not None and 0 < tuned.escalate_below < 1
    assert tuned.hash != shared_embedder().hash and tuned.name.endswith("+adapter")
    texts = ["I was charged twice for the sofa", "I was not charged for the sofa"]
    base_similarity = float(np.dot(*shared_embedder().embed(texts)))
    tuned_similarity = float(np.dot(*tuned.embed(texts)))
    assert tuned_similarity < base_similarity  # the deciding words now count


def _error(folder: Path, capsys, config: Path) -> str:
    code = cli_main(["--home", str(folder / "home"), "train", "--config", str(config), "--out", str(folder / "out")])
    assert code == 2
    assert not (folder / "out").exists()  # nothing started
    return capsys.readouterr().err


def test_unknown_key_is_an_error_before_training(tmp_path, capsys):
    write_tickets(tmp_path / "tickets.csv")
    err = _error(tmp_path, capsys, write_config(tmp_path, extra="epoch = 3"))
    assert "unknown key(s) train.epoch" in err and "known:" in err


def test_missing_data_file_is_an_error_before_training(tmp_path, capsys):
    err = _error(tmp_path, capsys, write_config(tmp_path, data='files = ["nope.csv"]'))
    assert "nope.csv: data file not found" in err


def test_csv_without_label_column_is_an_error_before_training(tmp_path, capsys):
    (tmp_path / "faq.csv").write_text("question,answer\nHow do I reset my PIN?,In the app.\n", encoding="utf-8")
    err = _error(tmp_path, capsys, write_config(tmp_path, data='files = ["faq.csv"]'))
    assert "faq.csv: no 'label' column" in err


def test_check_validates_and_stops(tmp_path, capsys):
    write_tickets(tmp_path / "tickets.csv")
    config = write_config(tmp_path)
    assert cli_main(["--home", str(tmp_path / "home"), "train", "--config", str(config), "--check"]) == 0
    out = capsys.readouterr().out
    assert "backend: sentence-transformers" in out and "config OK" in out
    assert not (tmp_path / "home").exists()


def test_split_is_seeded_and_holds_labels_out():
    rows = [LabelledText(f"ticket {i} about topic {i % 10}", f"label{i % 10}", "kb") for i in range(200)]
    rows += [LabelledText(f"off topic {i}", None, "kb") for i in range(20)]
    cfg = DataSection(files=["x"], validation_share=0.2, heldout_label_share=0.2)
    first, again = split(LabelledData(rows, []), cfg, seed=1), split(LabelledData(rows, []), cfg, seed=1)
    other = split(LabelledData(rows, []), cfg, seed=2)
    assert first.validation == again.validation and first.validation != other.validation
    assert len(first.heldout_labels) == 2
    held = {label.split(":")[1] for label in first.heldout_labels}
    assert not any(r.label in held for r in first.knowledge)  # their rows are validation tickets only
    escalate = [r for r in first.validation if r.label is None]
    assert len(escalate) >= 40  # 2 labels x 20 rows + the out-of-scope rows that hashed there
    assert all(r.label is None for r in first.negatives)


def test_batches_never_hold_a_label_twice():
    from datasets import Dataset

    from training.embedder.sampler import conflicts, no_shared_label_sampler, row_values

    labels = [("kb", f"l{i}") for i in range(8)]
    triplets = [Triplet(f"a{i}", f"p{i}", f"n{i}", labels[i % 8], labels[(i + 1) % 8]) for i in range(64)]
    dataset = Dataset.from_dict({"anchor": [t.anchor for t in triplets], "positive": [t.positive for t in triplets],
                                 "negative": [t.negative for t in triplets]})
    import torch

    sampler = no_shared_label_sampler(triplets)(dataset, batch_size=8, drop_last=False,
                                                generator=torch.Generator(), seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)  # the trainer plans its steps on len()
    assert sorted(i for b in batches for i in b) == list(range(64))  # every row once per epoch
    for batch in batches:
        seen: set = set()
        for index in batch:
            assert not conflicts(row_values(triplets[index]), seen)
            seen |= row_values(triplets[index])


def test_shipped_config_and_adapter():
    from retriever.embedder import Embedder, default_adapter_path
    from training.embedder.config import load_embedder_config
    from training.recipes import recipe_of

    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "minilm-embedder.toml"
    assert recipe_of(config).name == "embedder"
    cfg = load_embedder_config(config)
    assert cfg.data.sources == ["banking77", "clinc150", "bitext"] and len(cfg.data.exclude) == 3
    adapter = default_adapter_path()
    if adapter is None:
        pytest.skip("no shipped embedder adapter")
    meta = json.loads((adapter / "embedder.json").read_text())
    assert meta["metrics"]["after"]["top1"] > meta["metrics"]["before"]["top1"]
    assert Embedder(adapter=adapter).escalate_below == meta["escalate_below"]
