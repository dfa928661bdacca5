"""The cross-encoder reranker (retriever/reranker.py) and its recipe (training/reranker): a short
real training run on a tiny labelled CSV through the CLI, the folder loaded by the product's
Reranker and reordering a built case, refused when it does not match, and the config checks."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from retriever.candidates import Candidate
from ui.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
# Tickets about one item share most of their words across labels: the embedder's nearest row is
# often the same item under another label; only a few words decide.
ITEMS = ["hiking boots", "headphones", "espresso machine", "mattress", "mountain bike", "standing desk",
         "winter scarf", "television", "frying pan", "camping tent"]
TEMPLATES = {
    "charged_twice": ["I was charged twice for the {item}", "the {item} payment went through twice",
                      "my card was billed two times for the {item}"],
    "not_charged": ["I was not charged for the {item}", "the {item} payment did not go through",
                    "my card was never billed for the {item}"],
    "refund": ["I want my money back for the {item}", "please refund the {item}",
               "how do I return the {item} for a refund"],
    "late_delivery": ["the {item} has not arrived yet", "where is my {item} delivery",
                      "my {item} order is late"],
}
ANSWERS = {"charged_twice": "Duplicate charge", "not_charged": "Payment failed", "refund": "Refund request",
           "late_delivery": "Delivery delay"}
OUT_OF_SCOPE = ["what is the weather like in Paris tomorrow", "tell me a joke about cats",
                "who won the football match last night", "how tall is mount everest"]


def write_tickets(path: Path, out_of_scope: bool = True) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "label"])
        for label, templates in TEMPLATES.items():
            for item in ITEMS:
                writer.writerows([t.format(item=item), ANSWERS[label], label] for t in templates)
        if out_of_scope:  # labelled rows for training; a knowledge base has none
            writer.writerows([text, "", "oos"] for text in OUT_OF_SCOPE)
    return path


def write_config(folder: Path, data: str = 'files = ["tickets.csv"]', extra: str = "",
                 mining: str = "candidates = 4\nnegatives = 3") -> Path:
    path = folder / "reranker.toml"
    path.write_text(f"""recipe = "reranker"

[reranker]
max_length = 32

[data]
{data}
validation_share = 0.25
heldout_label_share = 0.0

[mining]
embedder_adapter = "none"
{mining}

[train]
epochs = 4
batch_size = 16
learning_rate = 3e-3
logging_steps = 2
early_stopping_patience = 1
{extra}

[tracking]
backend = "none"
""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reranker")
    write_tickets(folder / "tickets.csv")
    out = folder / "reranker"
    code = cli_main(["--home", str(folder / "home"), "train", "--config", str(write_config(folder)), "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def reranker(trained):
    from retriever.reranker import Reranker

    return Reranker(trained)


def test_training_run_writes_a_reranker_folder(trained):
    meta = json.loads((trained / "reranker.json").read_text())
    assert meta["format_version"] == 1 and meta["base_model"]["name"] == "all-MiniLM-L6-v2"
    assert meta["document"] == {"format": "question+answer", "answer_chars": 200} and meta["max_length"] == 32
    validation = meta["metrics"]["validation"]
    assert validation["retriever"]["top1"] < 0.8, validation  # the construction fools the embedder
    assert validation["reranker"]["top1"] >= validation["retriever"]["top1"] + 0.1, validation
    assert validation["fused_cross_fitted"]["top1"] >= validation["retriever"]["top1"], validation
    assert 0 <= meta["scoring"]["alpha"] <= 1 and meta["reload_max_difference"] < 1e-3
    # a fast test on idle cores; 116-265 s wall measured on 2 shared cores at a load average of 7-9
    assert meta["wall_time_s"] < 600, meta["wall_time_s"]
    assert (trained / "adapter_model.safetensors").stat().st_size < 5_000_000  # LoRA + pooler + head, not the model
    assert not (trained / "base-view").exists() and not (trained / "checkpoints").exists()
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records)
    assert [r["stage"] for r in records if "stage" in r][0] == "before"
    assert [r["stage"] for r in records if "stage" in r][-1] == "after"
    assert any(r.get("stage") == "epoch" for r in records)


def _candidate(id_: str, question: str, label: str, vote: float) -> Candidate:
    return Candidate(id_, question, ANSWERS[label], label, "tickets.csv", None, score=vote, rank_score=vote)


def test_reranker_moves_the_right_resolution_up(reranker):
    # the retriever's vote puts the wrong resolution first, narrowly: the words that decide are few
    wrong = _candidate("a", "I was not charged for the sofa", "not_charged", 0.82)
    right = _candidate("b", "my card was billed two times for the lamp", "charged_twice", 0.80)
    other = _candidate("c", "where is my sofa delivery", "late_delivery", 0.60)
    ranked = reranker.rerank("I was charged twice for the sofa", [wrong, right, other])
    assert [c.id for c in ranked][0] == "b"
    assert all(0.0 <= c.rerank_score <= 1.0 for c in ranked)
    assert ranked[0].rerank_score > ranked[-1].rerank_score
    assert {c.id: c.score for c in ranked} == {"a": 0.82, "b": 0.80, "c": 0.60}  # the floor's input is kept
    # what the judge's mix weighs follows the new order, so the retriever's own verdict picks "b" too
    assert [c.label_score for c in ranked] == sorted((c.label_score for c in ranked), reverse=True)
    assert reranker.rerank("anything", []) == []


def test_int8_and_fp32_agree(trained, reranker):
    from retriever.reranker import Reranker

    full = Reranker(trained, quantize=False)
    texts = ["I was not charged for the sofa\nPayment failed", "my card was billed two times\nDuplicate charge",
             "where is my sofa delivery\nDelivery delay", "please refund the lamp\nRefund request"]
    ticket = "the lamp payment went through twice"
    assert int(full.logits(ticket, texts).argmax()) == int(reranker.logits(ticket, texts).argmax())
    assert reranker.quantized and not full.quantized


def test_the_retriever_hands_its_pool_to_the_reranker(trained, reranker, tmp_path, embedder):
    from ingest.pipeline import ingest_paths
    from retriever.hybrid import HybridRetriever, RetrieverConfig
    from retriever.store import KnowledgeStore

    store = KnowledgeStore(tmp_path / "home", embedder)
    try:
        ingest_paths(store, [write_tickets(tmp_path / "tickets.csv", out_of_scope=False)])
        ticket = "my card was billed two times for the office chair"
        plain = HybridRetriever(store).search(ticket, k=3)
        found = HybridRetriever(store, RetrieverConfig(rerank_pool=4), reranker=reranker).search(ticket, k=3)
    finally:
        store.close()
    assert all(c.rerank_score is None for c in plain)
    assert len(found) == 3 and all(c.rerank_score is not None for c in found)
    assert [c.rerank_score for c in found] == sorted((c.rerank_score for c in found), reverse=True)
    assert found[0].label == "charged_twice"


def test_scoring_is_fitted_on_validation_and_cross_fitted():
    import numpy as np

    from training.reranker.evaluation import fit_scoring, validation_metrics
    from training.reranker.mining import Candidates

    # the retriever always puts the right resolution second; the logits know better
    lists = [Candidates(f"ticket {i}", "kb", [0, 1, 2], [0.9, 0.8, 0.1], 1) for i in range(40)]
    logits = [np.array([0.0, 2.0, -1.0]) + 0.01 * i for i in range(40)]
    oos = [Candidates("weather?", "kb", [0, 1, 2], [0.3, 0.2, 0.1], None, in_scope=False)]
    scoring = fit_scoring(lists + oos, logits + [np.array([-3.0, -3.0, -3.0])], [True] * 40 + [False])
    assert scoring.alpha > 0  # the smallest weight that lets the logits decide
    metrics = validation_metrics(lists, logits, scoring, seed=1)
    assert metrics["retriever"]["top1"] == 0.0 and metrics["reranker"]["top1"] == 1.0
    assert metrics["fused"]["top1"] == 1.0 and metrics["fused_cross_fitted"]["top1"] == 1.0
    right = scoring.probability(scoring.fused(logits[0], np.array([0.9, 0.8, 0.1])))
    assert right[1] > 0.5 > right[0]  # calibrated: the right candidate is likely, the others not


def _copy(trained: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(trained, folder)
    return folder


def _edit(folder: Path, **changes) -> None:
    file = folder / "reranker.json"
    meta = json.loads(file.read_text())
    meta.update(changes)
    file.write_text(json.dumps(meta))


def test_refuses_a_reranker_of_another_base_model(trained, tmp_path):
    from retriever.reranker import Reranker, RerankerError

    folder = _copy(trained, tmp_path)
    _edit(folder, base_model={"name": "all-MiniLM-L6-v2", "hash": "0123456789abcdef"})
    with pytest.raises(RerankerError, match=r"copy: trained on base model all-MiniLM-L6-v2 with hash 0123456789abcdef"):
        Reranker(folder)


def test_refuses_missing_corrupt_or_newer_metadata(trained, tmp_path):
    from retriever.reranker import Reranker, RerankerError

    folder = _copy(trained, tmp_path)
    _edit(folder, format_version=99)
    with pytest.raises(RerankerError, match=r"copy: reranker.json has format_version 99; this agent-helper reads version 1"):
        Reranker(folder)
    (folder / "reranker.json").write_text("{not json")
    with pytest.raises(RerankerError, match=r"copy: reranker.json is not valid JSON"):
        Reranker(folder)
    (folder / "reranker.json").unlink()
    with pytest.raises(RerankerError, match=r"copy: not a reranker folder \(no reranker.json\)"):
        Reranker(folder)
    shutil.copy(trained / "reranker.json", folder / "reranker.json")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(RerankerError, match=r"copy: incomplete reranker folder, missing adapter_model.safetensors"):
        Reranker(folder)


def _error(folder: Path, capsys, config: Path) -> str:
    code = cli_main(["--home", str(folder / "home"), "train", "--config", str(config), "--out", str(folder / "out")])
    assert code == 2
    assert not (folder / "out").exists()  # nothing started
    return capsys.readouterr().err


@pytest.mark.parametrize("section, message", [
    ('extra="epoch = 3"', "unknown key(s) train.epoch"),
    ('extra="loss = \'hinge\'"', "train.loss must be one of listnet, bce"),
    ('mining="candidates = 3\\nnegatives = 3"', "mining.negatives must be < mining.candidates"),
    ('extra="max_time_s = -1.0"', "train.max_time_s must be >= 0"),
    ('data=\'files = ["nope.csv"]\'', "nope.csv: data file not found"),
    ('data=\'files = ["tickets.csv"]\\nsources = ["banking77"]\'', "data.sources_dir is required"),
])
def test_config_errors_come_before_training(tmp_path, capsys, section, message):
    write_tickets(tmp_path / "tickets.csv")
    err = _error(tmp_path, capsys, eval(f"write_config(tmp_path, {section})"))
    assert message in err, err


def test_document_format_is_checked(tmp_path, capsys):
    write_tickets(tmp_path / "tickets.csv")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("max_length = 32", 'max_length = 32\ndocument = "answer"'))
    assert "reranker.document must be one of question, question+answer" in _error(tmp_path, capsys, config)


def test_check_validates_and_stops(tmp_path, capsys):
    write_tickets(tmp_path / "tickets.csv")
    assert cli_main(["--home", str(tmp_path / "home"), "train", "--config", str(write_config(tmp_path)), "--check"]) == 0
    out = capsys.readouterr().out
    assert "CrossEncoder" in out and "config OK" in out and "mining adapter none" in out
    assert not (tmp_path / "home").exists()


def test_shipped_configs_parse():
    from training.recipes import recipe_of
    from training.reranker.config import load_reranker_config

    for name in ("reranker-cpu.toml", "reranker-gpu.toml"):
        config = REPO / "training" / "configs" / name
        assert recipe_of(config).name == "reranker"
        cfg = load_reranker_config(config)
        assert cfg.reranker.base == "packaged" and cfg.mining.embedder_adapter == "shipped"
    gpu = load_reranker_config(REPO / "training" / "configs" / "reranker-gpu.toml")
    assert gpu.data.sources == ["banking77", "clinc150", "bitext", "stackfaq"]
    excluded = {Path(p).name for p in gpu.data.exclude}
    assert {"banking77_val.jsonl", "clinc150_val.jsonl", "stackfaq_val.jsonl", "eval_tickets.jsonl"} <= excluded
