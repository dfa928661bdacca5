"""The judge: reads a ticket and the retriever's candidates, reasons briefly, picks one or escalates.

    judge = Judge(load_model(ModelConfig(...)))
    for piece in judge.stream(ticket, candidates):   # reasoning text as it is generated …
        ...                                           # … then the final Verdict
    verdict = judge.decide(ticket, candidates)

How a verdict is reached:
1. Listwise (default): one prompt holds the top_k candidates; greedy decoding (reasoner/decoding.py)
   until the model has written "Answer: ", then the next-token distribution over the choice
   tokens "0".."k" is the judge's "answer" reading (0 = none of these). Confidence comes from these
   probabilities, never from parsing words. The answer follows the reasoning almost
   deterministically (P ~ 0.9999), so it carries little doubt; the "commit" reading is taken where
   the reasoning commits instead: at the first "[" (a candidate cited) or "Closest" (none fits),
   P(none) = P("Closest") / (P("Closest") + P("[")), the rest split by the digit distribution
   right after that "[" (or, on the "Closest" path, by the answer reading). `judge_reading` picks
   which one is combined with the retriever.
   Pairwise: one prompt per candidate, all in one left-padded batch, decoded the same way up to
   "Verdict:"; p_i = P(" same") restricted to {same, different}; see verdict.pairwise_distribution.
2. The judge's distribution is mixed with the retriever's (reasoner/verdict.py: `combine`), with
   the weights calibrated for the search embedder and stored in the adapter's agent_helper.json
   (reasoner/metadata.py); `JudgeConfig.from_metadata` reads them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import Generator, Iterator, Mapping, Sequence

from reasoner.backends import EMBEDDED, LoadedModel
from reasoner.decoding import DecodedRow, commit_reading, drain, renormalised
from reasoner.metadata import AdapterMetadata
from reasoner.prompt import (
    ANSWER_PREFIX, FORMATS, LISTWISE, LISTWISE_LEAD, MAX_CHOICES, MAX_PROMPT_TICKET_CHARS, PAIRWISE_LEAD,
    VERDICT_PREFIX, final_reasoning, listwise_user_message, pairwise_user_message, render_prompt,
    ticket_is_truncated, verdict_token_ids,
)
from reasoner.verdict import (
    EMPTY, FLOOR, RETRIEVER, Combination, ScoredCandidate, Verdict, combine, judge_cannot_change,
    pairwise_distribution, retriever_distribution,
)
from retriever.candidates import Candidate

NO_CANDIDATES_REASONING = "no knowledge-base entries to compare"
READINGS = ("answer", "commit")
DEFAULT_MAX_NEW_TOKENS = 48
"""The judge's reasoning budget when its adapter does not name one (training sets it from the
lengths of its reasoning targets, at most training.judge.trainer.MAX_JUDGE_TOKENS)."""


@dataclass(frozen=True)
class JudgeConfig:
    prompt_format: str = LISTWISE
    """"listwise" (all candidates in one prompt) or "pairwise" (one prompt per candidate)."""
    top_k: int = 5
    """Candidates shown to the judge (the retriever's first top_k); at most MAX_CHOICES (one-digit choices)."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Reasoning budget; past it "Answer:" is forced and the answer read anyway."""
    threshold: float = 0.5
    """Escalate when the winner's combined probability is below this."""
    judge_weight: float = 0.5
    """w in combined = w·P_judge + (1-w)·P_retriever."""
    retriever_temperature: float = 0.05
    """T of the retriever softmax over cosine similarities."""
    retriever_none_similarity: float = 0.45
    """Cosine similarity at which the retriever rates "none" and a candidate as equally likely."""
    judge_reading: str = "answer"
    """Listwise: which judge distribution is combined, "answer" (the answer token) or "commit" (where
    the reasoning commits to a candidate or to none; keeps the model's doubt)."""
    escalate_below: float | None = None
    """Escalate without running the model when the best candidate's similarity is below this (the
    embedder's calibrated threshold, from its embedder.json); None = always ask the model."""
    floor_origin: str = "embedder's calibrated floor"
    """Where `escalate_below` comes from, as the escalation's reasoning names it."""
    route: bool = True
    """Ask the model only where its vote could change the verdict (verdict.judge_cannot_change): the
    same verdicts, without the model's time on tickets the retriever decides by a clear margin."""

    def __post_init__(self):
        if self.prompt_format not in FORMATS:
            raise ValueError(f"prompt_format must be one of {FORMATS}, not {self.prompt_format!r}")
        if not 1 <= self.top_k <= MAX_CHOICES:
            raise ValueError(f"top_k must be 1..{MAX_CHOICES}, not {self.top_k}")
        if self.judge_reading not in READINGS:
            raise ValueError(f"judge_reading must be one of {READINGS}, not {self.judge_reading!r}")
        if self.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if not 0.0 <= self.judge_weight <= 1.0:
            raise ValueError("judge_weight must be within 0..1")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be within 0..1")
        if self.retriever_temperature <= 0:
            raise ValueError("retriever_temperature must be > 0")

    def with_knowledge_floor(self, floor: float | None) -> "JudgeConfig":
        """This calibration moved onto a knowledge base's own floor (derived from its content, see
        retriever/escalation.py): the floor replaces the embedder's, and the retriever's none-similarity
        moves by the same step, so the mix does not escalate what the floor now lets through (or the
        other way round). None: unchanged."""
        if floor is None:
            return self
        reference = self.escalate_below if self.escalate_below is not None else self.retriever_none_similarity
        return replace(self, escalate_below=floor, floor_origin="floor derived from this knowledge base's FAQ entries",
                       retriever_none_similarity=self.retriever_none_similarity + floor - reference)

    @classmethod
    def from_metadata(cls, metadata: AdapterMetadata | Mapping | None, embedder_hash: str | None = None,
                      **overrides) -> "JudgeConfig":
        """Defaults, then the adapter's settings (AdapterMetadata.judge_settings: its calibration,
        the one made beside the embedder whose hash is given when there is one), then explicit
        overrides (None values are ignored)."""
        if not isinstance(metadata, AdapterMetadata):
            metadata = AdapterMetadata(dict(metadata or {}))
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in metadata.judge_settings(embedder_hash).items() if k in names and v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class Judge:
    """Decides with one loaded model. A Judge keeps no per-call state, so concurrent streams are
    safe (they share the CPU). `stream` checks the ticket when first iterated."""

    def __init__(self, loaded: LoadedModel, config: JudgeConfig | None = None):
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.config = config if config is not None else JudgeConfig.from_metadata(loaded.adapter_metadata)
        self.decoder = loaded.decoder(self.config.max_new_tokens)
        self._verdict_ids = verdict_token_ids(self.tokenizer)
        self.model_name = loaded.info.describe()
        self._base_notes = self._notes_on_the_model()

    def _notes_on_the_model(self) -> list[str]:
        notes = []
        if not self.loaded.adapter_metadata.values and self.loaded.info.base == EMBEDDED:
            notes.append("the embedded judge has no trained adapter: its reasoning and vote are close to chance; "
                         "the retriever's similarity carries the decision")
        trained_format = self.loaded.adapter_metadata.get("prompt_format")
        if trained_format and trained_format != self.config.prompt_format:
            notes.append(f"the adapter was trained on the {trained_format} format but the judge runs "
                         f"{self.config.prompt_format}")
        return notes

    # -- public API ------------------------------------------------------------------------------------

    def decide(self, ticket: str, candidates: Sequence[Candidate]) -> Verdict:
        verdict = None
        for item in self.stream(ticket, candidates):
            if isinstance(item, Verdict):
                verdict = item
        assert verdict is not None
        return verdict

    def stream(self, ticket: str, candidates: Sequence[Candidate]) -> Iterator[str | Verdict]:
        """Reasoning text pieces as the model writes them, then the final Verdict."""
        verdicts = yield from _relabel(self.stream_many([(ticket, candidates)]), lambda item: item[1])
        yield verdicts[0]

    def retriever_decide(self, ticket: str, candidates: Sequence[Candidate]) -> Verdict:
        """The verdict without the model: the similarity floor, then the retriever's calibrated
        distribution alone (judge weight 0). What `eval` reports as the retriever's own stage."""
        started = time.perf_counter()
        shown, notes, early = self._prepare(ticket, candidates, started)
        return early if early is not None else self._retriever_verdict(shown, notes, started)

    def decide_many(self, items: Sequence[tuple[str, Sequence[Candidate]]], batch_size: int = 16) -> list[Verdict]:
        """Verdicts for many (ticket, candidates) at once, decoded together `batch_size` at a time
        (see `stream_many`)."""
        verdicts: list[Verdict] = []
        for begin in range(0, len(items), batch_size):
            verdicts.extend(drain(self.stream_many(items[begin : begin + batch_size])))
        return verdicts

    def stream_many(self, items: Sequence[tuple[str, Sequence[Candidate]]]
                    ) -> Generator[tuple[int, str], None, list[Verdict]]:
        """Judge several tickets together: yields (item index, reasoning text piece) as each is
        written, returns the verdicts in order. Listwise prompts are decoded in one left-padded batch
        (the same greedy decoding as one at a time: in float32 the same verdicts, several times the
        throughput); pairwise judges one ticket after another. Each latency_s is its batch's wall time.
        ValueError for an empty ticket, before anything runs."""
        started = time.perf_counter()
        prepared = [self._prepare(ticket, candidates, started) for ticket, candidates in items]
        verdicts: list[Verdict | None] = [early for _, _, early in prepared]
        pending = [i for i, (_, _, early) in enumerate(prepared) if early is None]
        if pending and self.config.prompt_format == LISTWISE:
            yield from self._listwise(items, prepared, pending, verdicts, started)
        for i in pending if self.config.prompt_format != LISTWISE else ():
            shown, notes, _ = prepared[i]
            judged, raw, reasoning = yield from _relabel(self._pairwise(items[i][0], shown, notes),
                                                         lambda piece, i=i: (i, piece))
            verdicts[i] = self._verdict(shown, judged, raw, reasoning, notes, started)
        return verdicts

    # -- steps ---------------------------------------------------------------------------------------

    def _listwise(self, items, prepared, pending: list[int], verdicts: list, started: float):
        prompts = [self._encode_prompt(listwise_user_message(items[i][0], prepared[i][0])) for i in pending]
        width = max(len(prepared[i][0]) for i in pending)
        decoding = self.decoder.decode(prompts, LISTWISE_LEAD, self.decoder.choice_ids[: width + 1], read_commit=True)
        rows = yield from _relabel(decoding, lambda item: (pending[item[0]], item[1]))
        for i, row in zip(pending, rows):
            shown, notes, _ = prepared[i]
            self._note_forced(row, notes)
            verdicts[i] = self._verdict(shown, self._readings(row, len(shown)), row.text,
                                        final_reasoning(row.text, LISTWISE_LEAD), notes, started)

    @staticmethod
    def check_ticket(ticket: str) -> None:
        """ValueError for what is no ticket (not text, or only whitespace)."""
        if not isinstance(ticket, str) or not ticket.strip():
            raise ValueError("the ticket is empty")

    def _prepare(self, ticket: str, candidates: Sequence[Candidate], started: float):
        """(candidates shown, notes, the verdict when no model call is needed)."""
        self.check_ticket(ticket)
        notes = list(self._base_notes)
        if ticket_is_truncated(ticket):
            notes.append(f"the ticket was cut to {MAX_PROMPT_TICKET_CHARS} characters for the prompt")
        shown = list(candidates)[: self.config.top_k]
        if not shown:
            return shown, notes, Verdict(match=None, confidence=1.0, escalate=True, reasoning=NO_CANDIDATES_REASONING,
                                         candidates=[], latency_s=time.perf_counter() - started, notes=notes,
                                         model=self.model_name, none_probability=1.0, decided_by=EMPTY)
        if self._nothing_close(shown):
            return shown, notes, self._early_escalation(shown, notes, started)
        if self.config.route and judge_cannot_change(self._retriever(shown), self.config.judge_weight,
                                                     self.config.threshold):
            notes.append("decided by the retriever's clear margin; the judge could not have changed this verdict, "
                         "so it was not asked")
            return shown, notes, self._retriever_verdict(shown, notes, started)
        return shown, notes, None

    def _retriever(self, shown: Sequence[Candidate]) -> list[float]:
        c = self.config
        return retriever_distribution([x.label_score for x in shown], temperature=c.retriever_temperature,
                                      none_similarity=c.retriever_none_similarity)

    def _retriever_verdict(self, shown: Sequence[Candidate], notes: list[str], started: float) -> Verdict:
        """The retriever's verdict alone (judge weight 0); where routing skips the judge, the same choice
        and escalation as the full mix would give."""
        retriever = self._retriever(shown)
        result = combine(retriever, [x.label_score for x in shown], judge_weight=0.0, threshold=self.config.threshold,
                         temperature=self.config.retriever_temperature,
                         none_similarity=self.config.retriever_none_similarity)
        verdict = self._verdict(shown, retriever, "", _retriever_reasoning(result, shown), notes, started,
                                judge_weight=0.0)
        verdict.decided_by = RETRIEVER
        verdict.candidates = [replace(s, judge_probability=0.0) for s in verdict.candidates]
        return verdict

    def _verdict(self, shown, judged, raw: str, reasoning: str, notes: list[str], started: float,
                 judge_weight: float | None = None) -> Verdict:
        """`judged`: the pairwise distribution, or the listwise readings (the configured one is combined)."""
        c = self.config
        readings = judged if isinstance(judged, dict) else {}
        result = combine(readings[c.judge_reading] if readings else judged, [x.label_score for x in shown],
                         judge_weight=c.judge_weight if judge_weight is None else judge_weight,
                         threshold=c.threshold, temperature=c.retriever_temperature,
                         none_similarity=c.retriever_none_similarity)
        scored = [ScoredCandidate(x, i, result.judge[i], result.retriever[i], result.combined[i])
                  for i, x in enumerate(shown, start=1)]
        return Verdict(
            match=None if result.escalate else shown[result.choice - 1],
            confidence=result.confidence,
            escalate=result.escalate,
            reasoning=reasoning or _summary(result, shown),
            candidates=scored,
            latency_s=time.perf_counter() - started,
            notes=notes,
            model=self.model_name,
            none_probability=result.combined[0],
            raw_output=raw,
            readings=readings,
        )

    def _nothing_close(self, shown: Sequence[Candidate]) -> bool:
        floor = self.config.escalate_below
        return floor is not None and max(x.score for x in shown) < floor

    def _early_escalation(self, shown: Sequence[Candidate], notes: list[str], started: float) -> Verdict:
        best = max(shown, key=lambda x: x.score)
        return Verdict(
            match=None,
            confidence=1.0,
            escalate=True,
            reasoning=(f"The closest entry, {best.question!r}, has similarity {best.score:.2f}, below the "
                       f"{self.config.floor_origin} ({self.config.escalate_below:.2f}): nothing in the "
                       "knowledge base is close to this ticket."),
            candidates=[ScoredCandidate(x, i, 0.0, 0.0, 0.0) for i, x in enumerate(shown, start=1)],
            latency_s=time.perf_counter() - started,
            notes=notes + ["escalated by the retriever's similarity floor; the model was not asked"],
            model=self.model_name,
            none_probability=1.0,
            decided_by=FLOOR,
        )

    # -- formats ---------------------------------------------------------------------------------------

    def _encode_prompt(self, user_message: str) -> list[int] | str:
        return self.decoder.encode_prompt(render_prompt(self.tokenizer, user_message))

    def _readings(self, row: DecodedRow, n_shown: int) -> dict[str, list[float]]:
        answer = renormalised(row.probabilities[: n_shown + 1])
        if row.cited is not None:
            row.cited = row.cited[:n_shown]
        return {"answer": answer, "commit": commit_reading(row, answer)}

    def _note_forced(self, row: DecodedRow, notes: list[str]) -> None:
        if row.forced:
            notes.append(
                f"the judge did not write '{ANSWER_PREFIX}' itself (within {self.config.max_new_tokens} tokens); "
                f"its answer was read after a forced '{ANSWER_PREFIX}'")

    def _pairwise(self, ticket, shown, notes) -> Generator[str, None, tuple[list[float], str, str]]:
        prompts = [self._encode_prompt(pairwise_user_message(ticket, x)) for x in shown]
        rows = drain(self.decoder.decode(prompts, PAIRWISE_LEAD, self._verdict_ids))
        same = [row.probabilities[1] for row in rows]
        forced = sum(row.forced for row in rows)
        if forced:
            notes.append(f"{forced} of {len(rows)} pairwise verdicts were read after a forced '{VERDICT_PREFIX}'")
        best = max(range(len(rows)), key=lambda i: same[i])
        reasoning = final_reasoning(rows[best].text, PAIRWISE_LEAD)
        if reasoning:
            yield reasoning
        return pairwise_distribution(same), rows[best].text, reasoning


def _relabel(generator: Generator, label) -> Generator:
    """`generator`'s items passed through `label`, and its result (which `yield from` over a
    generator expression would lose)."""
    while True:
        try:
            item = next(generator)
        except StopIteration as stop:
            return stop.value
        yield label(item)


def _retriever_reasoning(result: Combination, shown: Sequence[Candidate]) -> str:
    ranked = sorted(range(1, len(result.retriever)), key=lambda i: -result.retriever[i])
    best = shown[ranked[0] - 1]
    runner_up = f", far ahead of {shown[ranked[1] - 1].question!r} ({shown[ranked[1] - 1].score:.2f})" \
        if len(ranked) > 1 else ""
    if result.escalate:
        return (f"Nothing in the knowledge base is close enough: the closest entry, {best.question!r}, has "
                f"similarity {best.score:.2f}.")
    return f"{best.question!r} matches the ticket closely (similarity {best.score:.2f}){runner_up}."


def _summary(result: Combination, shown: Sequence[Candidate]) -> str:
    if result.choice == 0:
        return "No candidate is close enough to the ticket."
    best = shown[result.choice - 1]
    return f"Closest candidate: [{result.choice}] {best.question!r} (similarity {best.score:.2f})."


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "NO_CANDIDATES_REASONING", "READINGS", "Judge", "JudgeConfig"]
