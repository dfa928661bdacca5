"""A knowledge base's own escalation floor: derived from FAQ-style content, left to the embedder on
intent-style content, and carried into the judge's calibration."""

from __future__ import annotations

import numpy as np
import pytest

from app.home import Home
from app.service import AgentHelper
from ingest.pipeline import ingest_paths
from reasoner.judge import JudgeConfig
from retriever.escalation import FLOOR_QUANTILE, MIN_FAQ_ENTRIES, derive_floor

FAQ_QUESTIONS = [
    "How do I track my order?", "How long does delivery take?", "Do you ship abroad?",
    "How do I return an item?", "When will I get my refund?", "Can I change my delivery address?",
    "How do I reset my password?", "How do I delete my account?", "Which payment methods do you accept?",
    "Is my card data stored?", "Can I pay in instalments?", "How do I use a discount code?",
    "Why was my payment declined?", "Can I cancel my order?", "Do you have a loyalty programme?",
    "How do I contact customer service?", "What are your opening hours?", "Where are your shops?",
    "Is there a warranty on electronics?", "How do I report a damaged parcel?", "Can I buy a gift card?",
    "How do I unsubscribe from newsletters?", "Do you price match?", "Can I order by phone?",
    "How do I update my billing details?",
]


def unit_rows(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_faq_style_knowledge_gets_the_percentile_of_its_nearest_other_entries():
    vectors = unit_rows(30, seed=1)
    floor = derive_floor((f"faq {i}", v) for i, v in enumerate(vectors))
    similarities = vectors @ vectors.T
    np.fill_diagonal(similarities, -np.inf)
    expected = np.floor(np.quantile(similarities.max(axis=1).astype(np.float64), FLOOR_QUANTILE) * 100) / 100
    assert floor.kind == "faq" and (floor.faq_entries, floor.resolutions) == (30, 30)
    assert floor.similarity == pytest.approx(expected)


def test_intent_style_or_small_knowledge_keeps_the_embedders_floor():
    vectors = unit_rows(90, seed=2)
    intents = derive_floor((f"intent {i % 30}", v) for i, v in enumerate(vectors))
    assert intents.similarity is None and intents.kind == "intents" and intents.resolutions == 30
    few = derive_floor((f"faq {i}", v) for i, v in enumerate(vectors[: MIN_FAQ_ENTRIES - 1]))
    assert few.similarity is None and few.faq_entries == MIN_FAQ_ENTRIES - 1


def test_the_calibration_moves_with_the_knowledge_floor():
    config = JudgeConfig(escalate_below=0.61, retriever_none_similarity=0.6)
    moved = config.with_knowledge_floor(0.66)
    assert moved.escalate_below == 0.66 and moved.retriever_none_similarity == pytest.approx(0.65)
    assert "knowledge base" in moved.floor_origin
    assert config.with_knowledge_floor(None) is config


def test_an_faq_knowledge_base_escalates_below_its_own_floor(tmp_path):
    faq = tmp_path / "faq.csv"
    rows = ["question,answer"] + [f'"{q}","See our help page."' for q in FAQ_QUESTIONS]
    faq.write_text("\n".join(rows) + "\n", encoding="utf-8")
    service = AgentHelper(Home(tmp_path / "home"), log_answers=False)
    list(ingest_paths(service.store, [faq]))

    floor = service.knowledge_floor()
    assert floor.kind == "faq" and floor.faq_entries == len(FAQ_QUESTIONS)
    assert service.status()["knowledge_floor"] == floor.similarity
    assert f"escalates below {floor.similarity:.2f}" in service.status_line()
    assert service.judge.config.escalate_below == floor.similarity

    verdict = service.judge.retriever_decide("what is the boiling point of lead", service.search("what is the boiling point of lead"))
    assert verdict.escalate and verdict.decided_by == "floor"
    assert "derived from this knowledge base's FAQ entries" in verdict.reasoning


def test_the_status_line_says_when_the_judge_is_weighted_out(tmp_path):
    from reasoner.judge import JudgeConfig

    for weight, said in ((0.0, True), (0.2, False)):
        service = AgentHelper(Home(tmp_path / f"home-{weight}"), judge_config=JudgeConfig(judge_weight=weight),
                              log_answers=False)
        service.judge  # loaded: the status reads the loaded judge's calibration
        assert service.status()["judge_weight"] == weight
        assert ("weighted out by its calibration" in service.status_line()) is said
