"""Concurrent asks are judged together (app/batching.py), each streaming its own reasoning, with the
verdicts they get alone."""

from __future__ import annotations

import threading

import pytest
from conftest import judge_dtype
from test_judge import BATCH_TOLERANCE, CARDS, cand

from app.batching import JudgeBatcher
from reasoner.backends import ModelConfig, load_model
from reasoner.judge import Judge, JudgeConfig
from reasoner.verdict import Verdict

TICKETS = [
    ("I forgot my password", [cand(1, "How do I reset my password?", 0.85), CARDS[1]]),
    ("my card was declined at the shop", list(CARDS)),
    ("where is my parcel", [cand(3, "When will my order arrive?", 0.7), CARDS[0]]),
    ("how do I close my account", [cand(4, "How can I close my account?", 0.9)]),
]


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    loaded = load_model(ModelConfig(cache_dir=tmp_path_factory.getbasetemp() / "agent-helper-models",
                                    dtype=judge_dtype()))
    return Judge(loaded, JudgeConfig(max_new_tokens=10, top_k=3))


def _ask_together(batcher: JudgeBatcher, items) -> list[tuple[list[str], Verdict | BaseException]]:
    results: list = [None] * len(items)
    start = threading.Barrier(len(items))

    def ask(i: int) -> None:
        pieces: list[str] = []
        start.wait()
        try:
            for item in batcher.stream(*items[i]):
                pieces.append(item) if isinstance(item, str) else results.__setitem__(i, (pieces, item))
        except Exception as error:
            results[i] = (pieces, error)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def test_concurrent_asks_share_batches_and_get_their_own_verdicts(judge):
    alone = [judge.decide(ticket, candidates) for ticket, candidates in TICKETS]
    batcher = JudgeBatcher(judge, window_s=0.5, max_batch=8)
    together = _ask_together(batcher, TICKETS)
    assert max(batcher.batch_sizes) > 1 and sum(batcher.batch_sizes) == len(TICKETS)
    # In float32 a batch decodes bitwise as the single path: the same reasoning and verdict as alone.
    # bf16 rounds a left-padded batch differently and greedy decoding can take another word, then
    # another verdict (measured for issue 11: 3 of 24 moved), so there a ticket is checked against
    # itself only: its stream is its verdict's reasoning, and its readings are distributions.
    exact = judge.loaded.info.dtype == "float32"
    for one, (pieces, verdict) in zip(alone, together):
        assert isinstance(verdict, Verdict)
        assert "".join(pieces) == verdict.reasoning  # streamed pieces are its own reasoning
        assert len(verdict.candidates) == len(one.candidates)
        assert all(sum(r) == pytest.approx(1.0, abs=1e-3) for r in verdict.readings.values())
        if exact:
            assert verdict.reasoning == one.reasoning
            assert (verdict.match and verdict.match.id) == (one.match and one.match.id)
            assert verdict.escalate == one.escalate
            assert [c.judge_probability for c in verdict.candidates] == pytest.approx(
                [c.judge_probability for c in one.candidates], abs=BATCH_TOLERANCE["float32"])


def test_an_empty_ticket_is_refused_alone(judge):
    batcher = JudgeBatcher(judge, window_s=0.5, max_batch=8)
    (_, refused), (pieces, verdict) = _ask_together(batcher, [("  ", list(CARDS)), TICKETS[3]])
    assert isinstance(refused, ValueError) and "empty" in str(refused)
    assert isinstance(verdict, Verdict) and "".join(pieces) == verdict.reasoning


def test_a_failed_decode_reaches_every_request_of_its_batch_and_the_batcher_goes_on(judge, monkeypatch):
    batcher = JudgeBatcher(judge, window_s=0.5, max_batch=8)
    with monkeypatch.context() as patch:
        patch.setattr(judge, "stream_many", lambda items: (_ for _ in ()).throw(RuntimeError("out of memory")))
        failed = _ask_together(batcher, TICKETS[:2])
    assert all(isinstance(result, RuntimeError) and "out of memory" in str(result) for _, result in failed)
    (pieces, verdict), = _ask_together(batcher, [TICKETS[3]])
    assert isinstance(verdict, Verdict) and "".join(pieces) == verdict.reasoning
