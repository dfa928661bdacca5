"""The judge: reads a ticket and the retriever's candidates, reasons briefly, picks one or escalates.

    judge = Judge(load_model(ModelConfig(...)))
    for piece in judge.stream(ticket, candidates):   # reasoning text as it is generated …
        ...                                           # … then the final Verdict
    verdict = judge.decide(ticket, candidates)

How a verdict is reached:
1. Listwise (default): one prompt holds the top_k candidates. Greedy decoding with a KV cache, token by
   token, until the model has written "Answer: " (if it has not within max_new_tokens, or ends its turn
   first, "\\nAnswer: " is fed to it). The next-token distribution restricted to the choice tokens
   "0".."k" is the judge's "answer" reading of each choice (0 = none of these). Confidence comes from
   these probabilities, never from parsing words.
   The answer follows the reasoning almost deterministically (P ~ 0.9999), so it carries little doubt.
   The "commit" reading is taken where the reasoning commits instead: at the first "[" (a candidate
   cited) or "Closest" (none fits) the model writes, P(none) = P("Closest") / (P("Closest") + P("[")),
   and the rest is split by the digit distribution right after that "[" (or, on the "Closest" path,
   by the answer reading). `judge_reading` picks which one is combined with the retriever.
   Pairwise: one prompt per candidate, all in one left-padded batch, decoded the same way up to
   "Verdict:"; p_i = P(" same") restricted to {same, different}. Assuming at most one candidate is the
   match (the retriever gives one candidate per resolution), P(none) ∝ prod_j (1 - p_j) and
   P(i) ∝ p_i · prod_{j≠i} (1 - p_j), normalised over {none, 1..k}.
2. The retriever's own opinion: softmax over [s_none/T, cos_1/T, …, cos_k/T] with s_none =
   retriever_none_similarity (cosine similarity at which "none" and a candidate tie).
3. combined = w · P_judge + (1 - w) · P_retriever; the argmax wins; the verdict escalates when the
   argmax is "none" or its combined probability is below `threshold`.
   Training calibrates threshold, w, T and s_none on validation data and writes them into the
   adapter's agent_helper.json; `JudgeConfig.from_metadata` reads them.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, fields
from typing import Generator, Iterator, Mapping, Sequence

from reasoner.backends import EMBEDDED, LoadedModel
from reasoner.prompt import (
    ANSWER_PREFIX,
    CANDIDATE_REF,
    CHOICE_LEAD,
    FORMATS,
    LISTWISE,
    MAX_CHOICES,
    MAX_TICKET_CHARS,
    NONE_LEAD,
    PAIRWISE,
    REASONING_PREFIX,
    VERDICT_LEAD,
    VERDICT_PREFIX,
    choice_token_ids,
    end_of_turn_token_ids,
    listwise_user_message,
    pairwise_user_message,
    render_prompt,
    ticket_is_truncated,
    verdict_token_ids,
)
from retriever.candidates import Candidate

NO_CANDIDATES_REASONING = "no knowledge-base entries to compare"
READINGS = ("answer", "commit")


@dataclass(frozen=True)
class JudgeConfig:
    prompt_format: str = LISTWISE
    """"listwise" (all candidates in one prompt) or "pairwise" (one prompt per candidate)."""
    top_k: int = 5
    """Candidates shown to the judge (the retriever's first top_k); at most 9 (one-digit choices)."""
    max_new_tokens: int = 48
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

    @classmethod
    def from_metadata(cls, metadata: Mapping | None, embedder_hash: str | None = None, **overrides) -> "JudgeConfig":
        """Defaults, then the adapter's calibrated values (top-level keys or a "calibration" object
        named like these fields), then the calibration made with the embedder whose hash is given
        (`calibrations[embedder_hash]`: the mix depends on that embedder's similarities), then
        explicit overrides."""
        names = {f.name for f in fields(cls)}
        values: dict = {}
        metadata = metadata or {}
        per_embedder = (metadata.get("calibrations") or {}).get(embedder_hash) if embedder_hash else None
        for source in (metadata, metadata.get("calibration") or {}, per_embedder or {}):
            if isinstance(source, Mapping):
                values.update({k: v for k, v in source.items() if k in names and v is not None})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class ScoredCandidate:
    candidate: Candidate
    number: int
    """Its number in the prompt (1-based)."""
    judge_probability: float
    retriever_probability: float
    combined: float

    @property
    def score(self) -> float:
        """The retriever's cosine similarity."""
        return self.candidate.score

    def to_dict(self) -> dict:
        return {
            **self.candidate.to_dict(),
            "number": self.number,
            "judge_probability": round(self.judge_probability, 4),
            "retriever_probability": round(self.retriever_probability, 4),
            "combined": round(self.combined, 4),
        }


@dataclass
class Verdict:
    match: Candidate | None
    confidence: float
    """Combined probability of the verdict given: the match's, or "none"'s when escalating."""
    escalate: bool
    reasoning: str
    candidates: list[ScoredCandidate]
    latency_s: float
    notes: list[str] = field(default_factory=list)
    model: str = ""
    none_probability: float = 0.0
    """Combined probability that no candidate answers the ticket."""
    raw_output: str = ""
    """What the model wrote (listwise) or wrote for the best candidate (pairwise), for logs."""
    readings: dict[str, list[float]] = field(default_factory=dict)
    """Listwise: each judge reading ("answer", "commit") as [P(none), P(1), …], for calibration."""

    def to_json_dict(self) -> dict:
        """The `ask --json` object of DESIGN.md (plus notes, model, none_probability)."""
        match = None
        if self.match is not None:
            c = self.match
            match = {
                "id": c.id,
                "question": c.question,
                "answer": c.answer,
                "label": c.label,
                "source": c.source,
                "page": c.page,
            }
        return {
            "match": match,
            "confidence": round(self.confidence, 4),
            "escalate": self.escalate,
            "reasoning": self.reasoning,
            "candidates": [c.to_dict() for c in self.candidates],
            "latency_s": round(self.latency_s, 3),
            "none_probability": round(self.none_probability, 4),
            "notes": list(self.notes),
            "model": self.model,
        }


# --- combining the judge with the retriever (pure) -------------------------------------------------


def softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def retriever_distribution(
    similarities: Sequence[float], *, temperature: float, none_similarity: float
) -> list[float]:
    """[P(none), P(1), …, P(k)] = softmax([none_similarity, cos_1, …, cos_k] / temperature)."""
    return softmax([none_similarity / temperature] + [s / temperature for s in similarities])


def pairwise_distribution(same_probabilities: Sequence[float]) -> list[float]:
    """[P(none), P(1), …] from independent P(same_i), assuming at most one candidate matches."""
    eps = 1e-6
    p = [min(max(x, eps), 1 - eps) for x in same_probabilities]
    log_none = sum(math.log1p(-x) for x in p)
    logits = [log_none] + [log_none + math.log(x) - math.log1p(-x) for x in p]
    return softmax(logits)


@dataclass(frozen=True)
class Combination:
    judge: list[float]
    retriever: list[float]
    combined: list[float]
    """Index 0 = none, i = candidate i."""
    choice: int
    """Argmax of combined (0 = none)."""
    escalate: bool

    @property
    def confidence(self) -> float:
        return self.combined[0] if self.escalate else self.combined[self.choice]


def combine(
    judge_probabilities: Sequence[float],
    similarities: Sequence[float],
    *,
    judge_weight: float,
    threshold: float,
    temperature: float,
    none_similarity: float,
) -> Combination:
    """Mix the judge's [P(none), P(1..k)] with the retriever's and decide (see module docstring)."""
    if len(judge_probabilities) != len(similarities) + 1:
        raise ValueError("judge_probabilities must be [none, one per candidate]")
    retriever = retriever_distribution(
        similarities, temperature=temperature, none_similarity=none_similarity
    )
    total = sum(judge_probabilities)
    judge = [p / total for p in judge_probabilities] if total > 0 else [1.0 / len(retriever)] * len(retriever)
    combined = [judge_weight * j + (1 - judge_weight) * r for j, r in zip(judge, retriever)]
    choice = max(range(len(combined)), key=lambda i: (combined[i], -i))
    escalate = choice == 0 or combined[choice] < threshold
    return Combination(judge, retriever, combined, choice, escalate)


# --- decoding -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lead:
    """The text after which the option token is read: a marker and the gap before the option."""

    marker: str
    gap: str

    def complete(self, text: str) -> bool:
        gap = " +" if self.gap else ""
        return re.search(rf"(?:^|[^A-Za-z]){re.escape(self.marker)}{gap}$", text, re.IGNORECASE) is not None

    def needs_gap(self, text: str) -> bool:
        return bool(self.gap) and re.search(
            rf"(?:^|[^A-Za-z]){re.escape(self.marker)}$", text, re.IGNORECASE
        ) is not None

    def start(self, text: str) -> int:
        """Where the lead's line (or the marker itself, if written mid-line) starts in text."""
        found = list(re.finditer(rf"{re.escape(self.marker)}", text, re.IGNORECASE))
        if not found:
            return len(text)
        index = found[-1].start()
        line_start = text.rfind("\n", 0, index) + 1
        return line_start if not text[line_start:index].strip() else index


LISTWISE_LEAD = _Lead(ANSWER_PREFIX, CHOICE_LEAD[len(ANSWER_PREFIX) :])
PAIRWISE_LEAD = _Lead(VERDICT_PREFIX, VERDICT_LEAD[len(VERDICT_PREFIX) :])

_GEN, _FORCE, _READ, _DONE = range(4)


@dataclass
class _Row:
    prompt_ids: list[int]
    generated: list[int] = field(default_factory=list)
    text: str = ""
    state: int = _GEN
    queue: list[int] = field(default_factory=list)
    forced: bool = False
    probabilities: list[float] = field(default_factory=list)
    option_mass: float = 0.0
    commit: tuple[float, float] | None = None
    """(P(none lead), P(candidate reference)) at the first of them the model wrote."""
    cited: list[float] | None = None
    """Digit distribution after that candidate reference."""
    awaiting_digit: bool = False


def reasoning_display(text: str) -> str:
    """The reasoning part of a model's output so far: no "Reasoning:" prefix, no (partial) answer line.

    Grows monotonically as text grows, so streamed pieces are deltas of it; trailing whitespace
    is held back until text follows it.
    """
    t = text.lstrip()
    prefix = REASONING_PREFIX.lower()
    if len(t) < len(prefix) and prefix.startswith(t.lower()):
        return ""
    if t.lower().startswith(prefix):
        t = t[len(prefix) :].lstrip()
    line_start = t.rfind("\n") + 1
    last = t[line_start:].strip().lower()
    for marker in (ANSWER_PREFIX.lower(), VERDICT_PREFIX.lower()):
        if last and (marker.startswith(last) or last.startswith(marker)):
            return t[: max(line_start - 1, 0)].rstrip()
    return t.rstrip()


def final_reasoning(text: str, lead: _Lead) -> str:
    """The model's reasoning: text before its answer line, without the "Reasoning:" prefix."""
    body = text[: lead.start(text)].strip()
    if body.lower().startswith(REASONING_PREFIX.lower()):
        body = body[len(REASONING_PREFIX) :].strip()
    return body


class Judge:
    """Decides with one loaded model. A Judge keeps no per-call state, so concurrent streams are
    safe (they share the CPU). `stream` checks the ticket when first iterated."""

    def __init__(self, loaded: LoadedModel, config: JudgeConfig | None = None):
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.config = config if config is not None else JudgeConfig.from_metadata(loaded.adapter_metadata)
        tok = self.tokenizer
        self._stop_ids = set(end_of_turn_token_ids(tok))
        self._choice_ids = choice_token_ids(tok, MAX_CHOICES)
        self._verdict_ids = verdict_token_ids(tok)
        none_lead, cite = (tok.encode(" " + text, add_special_tokens=False)[0] for text in (NONE_LEAD, CANDIDATE_REF))
        self._commit_ids = (none_lead, cite)
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(self._stop_ids)
        self._forced_tail = {
            lead: (tok.encode(lead.marker + lead.gap, add_special_tokens=False),
                   tok.encode("\n" + lead.marker + lead.gap, add_special_tokens=False),
                   tok.encode(lead.gap, add_special_tokens=False) if lead.gap else [])
            for lead in (LISTWISE_LEAD, PAIRWISE_LEAD)
        }
        self.model_name = loaded.info.describe()
        self._base_notes: list[str] = []
        if not loaded.adapter_metadata and loaded.info.base == EMBEDDED:
            self._base_notes.append(
                "the embedded judge has no trained adapter: its reasoning and vote are close to chance; "
                "the retriever's similarity carries the decision"
            )
        trained_format = loaded.adapter_metadata.get("prompt_format")
        if trained_format and trained_format != self.config.prompt_format:
            self._base_notes.append(
                f"the adapter was trained on the {trained_format} format but the judge runs {self.config.prompt_format}"
            )

    @property
    def device(self):
        return next(self.model.parameters()).device

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
        started = time.perf_counter()
        shown, notes, early = self._prepare(ticket, candidates, started)
        if early is not None:
            yield early
            return
        if self.config.prompt_format == LISTWISE:
            judge_probs, raw, reasoning = yield from self._listwise(ticket, shown, notes)
        else:
            judge_probs, raw, reasoning = yield from self._pairwise(ticket, shown, notes)
        yield self._verdict(shown, judge_probs, raw, reasoning, notes, started)

    def decide_many(self, items: Sequence[tuple[str, Sequence[Candidate]]], batch_size: int = 16) -> list[Verdict]:
        """Verdicts for many (ticket, candidates) at once: listwise prompts are decoded together in
        left-padded batches (the same greedy decoding as `stream`, so the same answers, several
        times the throughput); pairwise falls back to one ticket at a time. Each verdict's
        latency_s is its batch's wall time."""
        if self.config.prompt_format != LISTWISE:
            return [self.decide(ticket, candidates) for ticket, candidates in items]
        verdicts: list[Verdict] = []
        for begin in range(0, len(items), batch_size):
            verdicts.extend(self._listwise_batch(items[begin : begin + batch_size]))
        return verdicts

    def _listwise_batch(self, items: Sequence[tuple[str, Sequence[Candidate]]]) -> list[Verdict]:
        started = time.perf_counter()
        prepared = [self._prepare(ticket, candidates, started) for ticket, candidates in items]
        pending = [(i, ticket) for i, ((ticket, _), (_, _, early)) in enumerate(zip(items, prepared)) if early is None]
        verdicts: list[Verdict | None] = [early for _, _, early in prepared]
        if pending:
            prompts = [self._encode_prompt(listwise_user_message(ticket, prepared[i][0])) for i, ticket in pending]
            width = max(len(prepared[i][0]) for i, _ in pending)
            rows = _drain(self._decode(prompts, LISTWISE_LEAD, self._choice_ids[: width + 1], stream_row=None,
                                       read_commit=True))
            for (i, _), row in zip(pending, rows):
                shown, notes, _ = prepared[i]
                self._note_forced(row, notes)
                verdicts[i] = self._verdict(shown, self._readings(row, len(shown)), row.text,
                                            final_reasoning(row.text, LISTWISE_LEAD), notes, started)
        return [v for v in verdicts if v is not None]

    def _prepare(self, ticket: str, candidates: Sequence[Candidate], started: float):
        """(candidates shown, notes, the verdict when no model call is needed)."""
        if not isinstance(ticket, str) or not ticket.strip():
            raise ValueError("the ticket is empty")
        notes = list(self._base_notes)
        if ticket_is_truncated(ticket):
            notes.append(f"the ticket was cut to {MAX_TICKET_CHARS} characters for the prompt")
        shown = list(candidates)[: self.config.top_k]
        if not shown:
            return shown, notes, Verdict(
                match=None,
                confidence=1.0,
                escalate=True,
                reasoning=NO_CANDIDATES_REASONING,
                candidates=[],
                latency_s=time.perf_counter() - started,
                notes=notes,
                model=self.model_name,
                none_probability=1.0,
            )
        if self._nothing_close(shown):
            return shown, notes, self._early_escalation(shown, notes, started)
        return shown, notes, None

    def _verdict(self, shown, judged, raw: str, reasoning: str, notes: list[str], started: float) -> Verdict:
        """`judged`: the pairwise distribution, or the listwise readings (the configured one is combined)."""
        c = self.config
        readings = judged if isinstance(judged, dict) else {}
        judge_probs = readings[c.judge_reading] if readings else judged
        result = combine(
            judge_probs,
            [x.score for x in shown],
            judge_weight=c.judge_weight,
            threshold=c.threshold,
            temperature=c.retriever_temperature,
            none_similarity=c.retriever_none_similarity,
        )
        scored = [
            ScoredCandidate(x, i, result.judge[i], result.retriever[i], result.combined[i])
            for i, x in enumerate(shown, start=1)
        ]
        match = None if result.escalate else shown[result.choice - 1]
        return Verdict(
            match=match,
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
        scored = [ScoredCandidate(x, i, 0.0, 0.0, 0.0) for i, x in enumerate(shown, start=1)]
        return Verdict(
            match=None,
            confidence=1.0,
            escalate=True,
            reasoning=(f"The closest entry, {best.question!r}, has similarity {best.score:.2f}, below the "
                       f"embedder's calibrated floor of {self.config.escalate_below:.2f}: nothing in the "
                       "knowledge base is close to this ticket."),
            candidates=scored,
            latency_s=time.perf_counter() - started,
            notes=notes + ["escalated by the retriever's similarity floor; the model was not asked"],
            model=self.model_name,
            none_probability=1.0,
        )

    # -- formats ---------------------------------------------------------------------------------------

    def _encode_prompt(self, user_message: str) -> list[int]:
        return self.tokenizer.encode(render_prompt(self.tokenizer, user_message), add_special_tokens=False)

    def _listwise(self, ticket, shown, notes) -> Generator[str, None, tuple[list[float], str, str]]:
        prompt = self._encode_prompt(listwise_user_message(ticket, shown))
        option_ids = self._choice_ids[: len(shown) + 1]
        rows = yield from self._decode([prompt], LISTWISE_LEAD, option_ids, stream_row=0, read_commit=True)
        row = rows[0]
        self._note_forced(row, notes)
        return self._readings(row, len(shown)), row.text, final_reasoning(row.text, LISTWISE_LEAD)

    def _readings(self, row: "_Row", n_shown: int) -> dict[str, list[float]]:
        answer = _renormalised(row.probabilities[: n_shown + 1])
        if row.cited is not None:
            row.cited = row.cited[:n_shown]
        return {"answer": answer, "commit": commit_reading(row, answer)}

    def _note_forced(self, row: "_Row", notes: list[str]) -> None:
        if row.forced:
            notes.append(
                f"the judge did not write '{ANSWER_PREFIX}' itself (within {self.config.max_new_tokens} tokens); "
                f"its answer was read after a forced '{ANSWER_PREFIX}'"
            )

    def _pairwise(self, ticket, shown, notes) -> Generator[str, None, tuple[list[float], str, str]]:
        prompts = [self._encode_prompt(pairwise_user_message(ticket, x)) for x in shown]
        rows = yield from self._decode(prompts, PAIRWISE_LEAD, self._verdict_ids, stream_row=None)
        same = [row.probabilities[1] for row in rows]
        forced = sum(row.forced for row in rows)
        if forced:
            notes.append(f"{forced} of {len(rows)} pairwise verdicts were read after a forced '{VERDICT_PREFIX}'")
        best = max(range(len(rows)), key=lambda i: same[i])
        reasoning = final_reasoning(rows[best].text, PAIRWISE_LEAD)
        if reasoning:
            yield reasoning
        return pairwise_distribution(same), rows[best].text, reasoning

    # -- the decoding loop -----------------------------------------------------------------------------

    def _read_commit(self, row: _Row, logits) -> None:
        """Before a row's next token: the digit distribution after its first cited "[", and the odds
        of "Closest" against "[" at the first of them it writes."""
        import torch

        if row.awaiting_digit:
            row.cited = torch.softmax(logits, dim=-1)[self._choice_ids[1:]].tolist()
            row.awaiting_digit = False
        if row.commit is None:
            token = int(logits.argmax())
            if token in self._commit_ids:
                probs = torch.softmax(logits, dim=-1)
                none_lead, cite = self._commit_ids
                row.commit = (float(probs[none_lead]), float(probs[cite]))
                row.awaiting_digit = token == cite

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        import torch

        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1, :].float(), out.past_key_values

    def _decode(
        self, prompts: list[list[int]], lead: _Lead, option_ids: list[int], stream_row: int | None,
        read_commit: bool = False,
    ) -> Generator[str, None, list[_Row]]:
        """Greedy, batched, KV-cached decoding of each prompt until its lead is written (or forced);
        then reads each row's distribution over option_ids. Yields text deltas of `stream_row`.
        `read_commit` also records where listwise reasoning commits (see `commit_reading`)."""
        import torch

        device = self.device
        rows = [_Row(list(p)) for p in prompts]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_position = mask.sum(-1)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        logits, cache = self._forward(ids, mask, positions, None)
        start_tail, newline_tail, gap_tail = self._forced_tail[lead]
        option_index = torch.tensor(option_ids, device=logits.device)
        emitted = ""
        while True:
            feed: list[int] = []
            active: list[int] = []
            for r, row in enumerate(rows):
                if row.state == _READ:
                    full = torch.softmax(logits[r], dim=-1)
                    chosen = full.index_select(0, option_index)
                    row.option_mass = float(chosen.sum())
                    row.probabilities = (chosen / chosen.sum()).tolist() if row.option_mass > 0 else [
                        1.0 / len(option_ids)
                    ] * len(option_ids)
                    row.state = _DONE
                if row.state == _GEN:
                    if read_commit:
                        self._read_commit(row, logits[r])
                    token = int(logits[r].argmax())
                    if token in self._stop_ids or len(row.generated) >= self.config.max_new_tokens:
                        row.forced = True
                        at_line_start = not row.text or row.text.endswith("\n")
                        row.queue = list(start_tail if at_line_start else newline_tail)
                        row.state = _FORCE
                    else:
                        row.generated.append(token)
                        row.text = self.tokenizer.decode(row.generated, skip_special_tokens=False)
                        if lead.complete(row.text):
                            row.state = _READ
                        elif lead.needs_gap(row.text):
                            row.queue, row.state = list(gap_tail), _FORCE
                        feed.append(token)
                        active.append(1)
                        continue
                if row.state == _FORCE:
                    token = row.queue.pop(0)
                    row.generated.append(token)
                    row.text = self.tokenizer.decode(row.generated, skip_special_tokens=False)
                    if not row.queue:
                        row.state = _READ
                    feed.append(token)
                    active.append(1)
                    continue
                feed.append(self._pad_id)
                active.append(0)
            if stream_row is not None:
                shown = reasoning_display(rows[stream_row].text)
                if shown.startswith(emitted) and len(shown) > len(emitted) and not shown.endswith("\ufffd"):
                    yield shown[len(emitted) :]
                    emitted = shown
            if not any(active):
                break
            step = torch.tensor(feed, dtype=torch.long, device=device).unsqueeze(1)
            flags = torch.tensor(active, dtype=torch.long, device=device).unsqueeze(1)
            mask = torch.cat([mask, flags], dim=1)
            positions = next_position.to(device).unsqueeze(1)
            next_position = next_position + flags.squeeze(1).cpu()
            logits, cache = self._forward(step, mask, positions, cache)
        return rows


def commit_reading(row: _Row, answer: Sequence[float]) -> list[float]:
    """[P(none), P(1..k)] where the reasoning committed; the answer reading when it never did."""
    if row.commit is None:
        return list(answer)
    none, cite = row.commit
    p_none = none / (none + cite) if none + cite > 0 else answer[0]
    split = row.cited if row.cited and sum(row.cited) > 0 else list(answer[1:])
    total = sum(split) or 1.0
    return [p_none] + [(1 - p_none) * x / total for x in split]


def _drain(generator: Generator[str, None, list]) -> list:
    """Run a decoding generator that streams nothing to its end and return its result."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def _renormalised(probabilities: Sequence[float]) -> list[float]:
    """A row of a batch reads options for the batch's widest prompt; keep only its own, summing to 1."""
    total = sum(probabilities)
    return [p / total for p in probabilities] if total > 0 else [1.0 / len(probabilities)] * len(probabilities)


def _summary(result: Combination, shown: Sequence[Candidate]) -> str:
    if result.choice == 0:
        return "No candidate is close enough to the ticket."
    best = shown[result.choice - 1]
    return f"Closest candidate: [{result.choice}] {best.question!r} (similarity {best.score:.2f})."


__all__ = [
    "Combination",
    "Judge",
    "JudgeConfig",
    "NO_CANDIDATES_REASONING",
    "ScoredCandidate",
    "Verdict",
    "combine",
    "pairwise_distribution",
    "reasoning_display",
    "retriever_distribution",
]
