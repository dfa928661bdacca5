"""The judge-data builder: deterministic, balanced, leak-free; rationales grounded; feedback accepted.

Built from small synthetic labelled data made here (never ../shared), with the hashing embedder
so the tests need no model.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from reasoner import prompt
from retriever.hybrid import RetrieverConfig
from training.judge import rationale
from training.judge.data import build, mining
from training.judge.data.__main__ import main as data_main
from training.judge.data.feedback import example_from_feedback, load_feedback
from training.datasets import DataError
from training.judge.data.schema import read_examples, write_examples
from training.splits import text_key
from training.datasets import License, Row, Source, humanise

TOPICS = {
    "card_arrival": ["card", "arrive", "delivery", "post", "mail"],
    "change_pin": ["pin", "change", "code", "digits", "reset"],
    "exchange_rate": ["exchange", "rate", "currency", "euro", "convert"],
    "lost_card": ["lost", "stolen", "card", "missing", "block"],
    "top_up_failed": ["top", "failed", "money", "wallet", "add"],
    "refund_request": ["refund", "return", "money", "purchase", "back"],
}
FILLERS = ["please", "today", "urgently", "again", "now", "quickly", "still", "here"]
OOS = ["what is the weather in paris", "book a table for two tonight", "play some jazz music",
       "how tall is mount everest", "translate hello into german", "set an alarm for six",
       "who won the football game", "recommend a good novel", "what time is it in tokyo",
       "tell me a joke about cats", "how do i bake bread", "find flights to rome"]


def synthetic_source(per_label: int = 14) -> Source:
    tickets = []
    for label, words in TOPICS.items():
        for i in range(per_label):
            picked = [words[(i + j) % len(words)] for j in range(3)]
            text = f"my {picked[0]} {picked[1]} {FILLERS[i % len(FILLERS)]} {picked[2]} case {i}"
            tickets.append(Row(text, label, humanise(label)))
    return Source("synthetic", License("CC0", "made in the test"), tickets, out_of_scope=OOS)


# label_votes=1: each label by its best row, so the synthetic labels' right answer is not always first
# (voting ranks these easy tickets' own label first every time; it has its own test below)
OPTIONS = build.BuildOptions(seed=7, top_k=4, validation_share=0.25, label_votes=1)


def run_build(opts=OPTIONS, source=None):
    return build.build([source or synthetic_source()], opts, mining.hashing_embed, "hashing")


def test_same_seed_gives_identical_bytes(tmp_path):
    first, second = run_build(), run_build()
    write_examples(tmp_path / "a.jsonl", first.train + first.validation)
    write_examples(tmp_path / "b.jsonl", second.train + second.validation)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    other = run_build(replace(OPTIONS, seed=8))
    assert [e.id for e in other.train] != [e.id for e in first.train]


def test_cli_build_is_deterministic_and_writes_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr("training.datasets.load", lambda names, root: [synthetic_source()])
    args = ["build", "--sources-dir", str(tmp_path), "--out", "", "--embedder", "hashing", "--seed", "5"]
    for name in ("one", "two"):
        args[4] = str(tmp_path / name)
        assert data_main(args) == 0
    for file in ("train.jsonl", "validation.jsonl", "manifest.json"):
        assert (tmp_path / "one" / file).read_bytes() == (tmp_path / "two" / file).read_bytes()
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["sources"]["synthetic"]["license"]["name"] == "CC0"
    assert manifest["leak_check"]["validation_examples_dropped"] == 0
    assert manifest["files"]["train.jsonl"]["examples"] > 0


def test_leak_free_no_text_shared_across_splits():
    result = run_build()
    train_texts = set().union(*(build.texts_of(e) for e in result.train))
    for example in result.validation:
        assert not build.texts_of(example) & train_texts, example.id
    for example in result.train + result.validation:  # leave-one-out: never its own text
        assert text_key(example.ticket) not in {text_key(c.question) for c in example.candidates}
    assert {e.split for e in result.train} == {"train"}
    assert {e.split for e in result.validation} == {"validation"}


def test_training_split_is_balanced():
    result = run_build()
    listwise = [e for e in result.train if e.format == prompt.LISTWISE]
    nones = sum(e.choice == 0 for e in listwise)
    assert abs(nones / len(listwise) - OPTIONS.none_share) < 0.08
    in_scope = [e for e in listwise if e.choice > 0]
    assert sum(e.choice == 1 for e in in_scope) <= OPTIONS.max_first_share * len(in_scope) + 1
    per_label = Counter(e.gold_label for e in in_scope)
    assert max(per_label.values()) <= 2 * min(per_label.values())
    pairwise = [e for e in result.train if e.format == prompt.PAIRWISE]
    assert pairwise and sum(e.choice for e in pairwise) * 2 == len(pairwise)
    kinds = Counter(e.kind for e in pairwise)
    assert kinds["hard_negative"] > kinds["random_negative"]


def test_listwise_gold_matches_labels_and_oos_answers_none():
    result = run_build()
    for example in result.train + result.validation:
        if example.format != prompt.LISTWISE:
            continue
        assert len(example.candidates) <= OPTIONS.top_k
        labels = [c.label for c in example.candidates]
        assert len(set(labels)) == len(labels)  # one candidate per resolution
        assert [c.score for c in example.candidates] == sorted((c.score for c in example.candidates), reverse=True)
        if example.kind == "out_of_scope":
            assert example.choice == 0
        if example.choice:
            assert example.gold_label in TOPICS


def test_rationale_is_grounded_short_and_varied():
    result = run_build()
    # Varied = built from each example's facts, never a fixed sentence: examples that differ in
    # their facts (format, answer, the ticket's topic words) never share a rationale. Synthetic
    # tickets repeat word triples, so equal facts may give equal rationales.
    vocabulary = {w for words in TOPICS.values() for w in words}
    facts_of: dict[str, set] = {}
    for example in result.train:
        topic_words = frozenset(w for w in example.ticket.split() if w in vocabulary)
        facts_of.setdefault(example.reasoning, set()).add((example.format, example.choice, topic_words))
    assert all(len(facts) == 1 for facts in facts_of.values()), facts_of
    assert len(facts_of) > len(result.train) / 2
    for example in result.train:
        words = set(rationale.words(example.ticket))
        asked = example.reasoning.split(".")[0].removeprefix("Asks:").split()
        assert all(w in words for w in asked) or asked == ["unclear", "request"], example.reasoning
        assert len(example.reasoning.split()) <= 32, example.reasoning
        if example.format == prompt.LISTWISE and example.choice:
            assert f"[{example.choice}]" in example.reasoning
        if example.format == prompt.LISTWISE and example.choice == 0:
            assert example.reasoning.endswith("None fits.")


def test_rationale_cites_shared_and_conflicting_details():
    text = rationale.listwise(
        "my card did not arrive after 3 weeks",
        [("card delivery takes 7 days", "Card arrival"), ("card arrived but pin missing", "Get pin")],
        2,
    )
    assert text.startswith("Asks:") and "[2] get pin" in text and "[1] card arrival" in text
    pair = rationale.pairwise("refund for 2 shoes", "refund of 5 shoes please", "", False)
    assert "numbers differ (2 vs 5)" in pair and "Shares refund" in pair


def test_feedback_rows_become_examples(tmp_path):
    candidates = [
        {"id": "a", "question": "Where is my card?", "answer": "Card arrival", "label": "card_arrival", "score": 0.8},
        {"id": "b", "question": "Change my PIN", "answer": "Change PIN", "label": "change_pin", "score": 0.5},
    ]
    rows = [
        {"ticket": "how do I change my pin code", "candidates": candidates, "correct_id": "b", "rating": "down"},
        {"ticket": "what's the weather", "candidates": candidates, "correct_id": None, "verdict_id": "a"},
        {"ticket": "card never came", "candidates": candidates, "chosen_id": "zzz"},
        {"ticket": "pin reset", "candidates": candidates, "chosen_id": "c",
         "chosen_candidate": {"id": "c", "question": "Reset PIN", "answer": "Reset", "label": "reset", "score": 0.6}},
    ]
    path = tmp_path / "feedback.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = load_feedback(path, seed=1)
    assert loaded.skipped == 1
    first, second, third = loaded.examples
    assert (first.choice, second.choice) == (2, 0)
    assert [c.id for c in third.candidates] == ["a", "c"] and third.choice == 2
    assert all(e.kind == "feedback" and e.format == prompt.LISTWISE for e in loaded.examples)
    out = tmp_path / "examples.jsonl"
    write_examples(out, loaded.examples)
    assert [e.id for e in read_examples(out)] == [e.id for e in loaded.examples]
    same = example_from_feedback("how do I change my pin code", candidates, "b", seed=1)
    assert same == first


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"format": "listwise"}', "missing key 'ticket'"),
        ('{"format": "listwise", "ticket": "x", "candidates": [], "choice": 0, "reasoning": ""}', "at least 1 candidate"),
        ('{"format": "triplet", "ticket": "x"}', "format must be one of"),
        ('{"format": "pairwise", "ticket": "x", "candidates": [{"id": "a", "question": "q", "answer": "", '
         '"label": null, "score": 0.5}], "choice": 2, "reasoning": "r"}', "choice 2 out of range"),
        ('{"format": "listwise", "ticket": "  ", "candidates": [], "choice": 0, "reasoning": ""}', "empty ticket"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, line, message):
    good = run_build().train[0].to_json()
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(DataError, match=message) as error:
        read_examples(path)
    assert f"{path}:3" in str(error.value)


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no examples"):
        read_examples(tmp_path / "empty.jsonl")


def test_render_uses_the_prompt_module_and_top_k_cut():
    class Template:
        """Minimal stand-in for a tokenizer: the prompt module only needs apply_chat_template."""

        chat_template = prompt.CHATML_CHAT_TEMPLATE

        def apply_chat_template(self, messages, chat_template, tokenize, add_generation_prompt=False):
            text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
            return text + ("<assistant>" if add_generation_prompt else "")

    from training.judge.data.schema import render

    example = next(e for e in run_build().train if e.format == prompt.LISTWISE and e.choice >= 2)
    full_prompt, completion = render(example, Template())
    assert prompt.listwise_user_message(example.ticket, example.prompt_candidates()) in full_prompt
    assert completion.startswith(prompt.listwise_target(example.reasoning, example.choice))
    _, cut = render(example, Template(), top_k=example.choice - 1)
    assert f"{prompt.ANSWER_PREFIX} 0" in cut and "None fits." in cut
    from training.judge.data.schema import shuffled

    shown, choice, reasoning = shuffled(example.id, example.prompt_candidates(), example.choice, example.reasoning)
    mixed_prompt, mixed = render(example, Template(), shuffle=True)
    assert prompt.listwise_user_message(example.ticket, shown) in mixed_prompt
    assert mixed.startswith(prompt.listwise_target(reasoning, choice))


def test_shuffled_render_moves_the_answer_and_its_references_with_the_candidates():
    """Training shows candidates in a seeded order: the right one lands anywhere, the reasoning
    cites it by its new number, and the same example always renders the same way."""
    from training.judge.data.schema import shuffled

    examples = [e for e in run_build().train if e.format == prompt.LISTWISE and e.choice >= 1]
    positions = set()
    for example in examples:
        shown, choice, reasoning = shuffled(example.id, list(example.candidates), example.choice, example.reasoning)
        assert shown[choice - 1] == example.candidates[example.choice - 1]
        assert f"[{choice}]" in reasoning  # the reasoning still cites the right candidate
        assert sorted(c.id for c in shown) == sorted(c.id for c in example.candidates)
        assert shuffled(example.id, list(example.candidates), example.choice, example.reasoning)[1] == choice
        positions.add(choice)
    assert len(positions) >= 3  # not always first any more
    rival = next(e for e in examples if e.choice >= 2)  # cites [1] (the retriever's favourite) too
    shown, _, reasoning = shuffled(rival.id, list(rival.candidates), rival.choice, rival.reasoning)
    favourite = shown.index(rival.candidates[0]) + 1
    assert f"[{favourite}]" in reasoning


def test_web_page_feedback_export_trains(tmp_path):
    """What ui/feedback.py exports is what the trainer's feedback loader reads."""
    from retriever.candidates import Candidate
    from app.feedback import FeedbackStore, export_feedback

    shown = [Candidate("a", "Where is my card?", "Card arrival", "card_arrival", "faq.pdf", 2, 0.81, 0.5),
             Candidate("b", "Change my PIN", "Change PIN", "change_pin", "faq.pdf", 3, 0.52, 0.4)]
    store = FeedbackStore(tmp_path / "feedback.db")
    verdict = {"match": {"id": "a"}, "escalate": False}
    store.give(store.record_answer("how do i change my pin", [c.to_dict() for c in shown], verdict, "m"),
               correct_id="b")
    store.give(store.record_answer("is it sunny today", [c.to_dict() for c in shown], verdict, "m"),
               correct_id="none")
    store.close()
    export_feedback(tmp_path / "feedback.db", tmp_path / "export.jsonl")
    loaded = load_feedback(tmp_path / "export.jsonl")
    assert [(e.ticket, e.choice) for e in loaded.examples] == [("how do i change my pin", 2), ("is it sunny today", 0)]
    assert loaded.examples[0].reasoning.startswith("Asks:")


def test_excluded_eval_tickets_appear_nowhere(tmp_path, monkeypatch):
    source = synthetic_source()
    monkeypatch.setattr("training.datasets.load", lambda names, root: [synthetic_source()])
    held = [r.text for r in source.tickets[::5]] + OOS[:3]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"ticket": t.upper(), "label": None}) + "\n" for t in held))
    out = tmp_path / "out"
    assert data_main(["build", "--sources-dir", str(tmp_path), "--out", str(out), "--embedder", "hashing",
                      "--exclude", str(tmp_path / "eval.jsonl")]) == 0
    held_keys = {text_key(t) for t in held}
    for split in ("train", "validation"):
        for example in read_examples(out / f"{split}.jsonl"):
            assert not build.texts_of(example) & held_keys
    assert str(tmp_path / "eval.jsonl") in json.loads((out / "manifest.json").read_text())["excluded_ticket_files"]


def test_candidates_are_ranked_by_the_label_vote_like_the_products_retriever():
    """One lucky close row loses to a label with three fairly close ones, as in retriever/hybrid.py;
    each candidate still shows its best row's similarity."""
    sims = np.array([0.95, 0.30, 0.30, 0.85, 0.84, 0.83])
    rows = [Row(f"{label}{i}", label, "") for label in "ab" for i in range(3)]
    vectors = np.zeros((6, 8), dtype=np.float32)
    vectors[:, 0] = sims
    vectors[np.arange(6), np.arange(1, 7)] = np.sqrt(1 - sims**2)
    query = np.eye(1, 8, dtype=np.float32)

    def ranked(votes):
        return [(h.row.label, round(h.score, 2)) for h in mining.Pool(rows, vectors, votes).search(["q"], query, 2)[0].hits]

    assert ranked(1) == [("a", 0.95), ("b", 0.85)]
    assert ranked(3) == [("b", 0.85), ("a", 0.95)]
    assert build.BuildOptions().label_votes == RetrieverConfig().label_votes
