"""Greedy decoding for the judge: batched, KV-cached, streamed.

Each prompt is decoded token by token until the model has written its answer lead ("Answer: ";
when it has not within `max_new_tokens`, or ends its turn first, the lead is fed to it), then the
next-token distribution restricted to the option tokens is read. Listwise decoding also records
where the reasoning commits (`commit_reading`).

`RowStepper` holds these rules, once, for any way of running the model: it moves one prompt's
`DecodedRow` on by one position, given what the model predicts there. `Decoder` runs a
transformers model in this process: prompts of a batch are left-padded and decoded together; a
finished row keeps feeding padding (masked out) until the slowest row is done. It is any
transformers causal LM called with input_ids, attention_mask, position_ids and past_key_values
(tests drive it with a scripted stand-in). reasoner/served.py steps the same rules through the
tokens an inference server returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generator, Iterator, Sequence

from reasoner.prompt import (
    CANDIDATE_REF, LISTWISE_LEAD, MAX_CHOICES, NONE_LEAD, PAIRWISE_LEAD, AnswerLead, choice_token_ids,
    end_of_turn_token_ids, reasoning_display,
)

GENERATE, FEED, READ, DONE = range(4)
"""DecodedRow.state: writing its reasoning; being fed the answer lead; its options to be read; finished."""


@dataclass
class DecodedRow:
    """One prompt's decoding: what was generated, and the distributions read from it."""

    prompt_ids: list[int]
    generated: list[int] = field(default_factory=list)
    text: str = ""
    state: int = GENERATE
    queue: list[int] = field(default_factory=list)
    """Tokens of the lead still to be fed (forced)."""
    forced: bool = False
    """The lead was fed, not written by the model."""
    probabilities: list[float] = field(default_factory=list)
    """Distribution over the option tokens after the lead (sums to 1)."""
    option_mass: float = 0.0
    """How much of the full next-token distribution the options held."""
    commit: tuple[float, float] | None = None
    """(P(none lead), P(candidate reference)) at the first of them the model wrote."""
    cited: list[float] | None = None
    """Digit distribution after that candidate reference."""
    awaiting_digit: bool = False


@dataclass(frozen=True)
class DecodingTokens:
    """The tokens decoding compares with, read once from the tokenizer (token ids)."""

    stop: frozenset
    """Tokens that end the assistant's turn."""
    choices: list
    """The choice tokens "0".."9" after "Answer: " (index = choice number)."""
    commit: tuple
    """(first token of " Closest", first token of " [") : where listwise reasoning commits."""
    forced_tail: dict
    """Per lead: (tokens fed at a line start, tokens fed mid-line, the gap fed after a bare marker)."""

    @classmethod
    def of(cls, tokenizer) -> "DecodingTokens":
        tok = tokenizer
        commit = tuple(tok.encode(" " + text, add_special_tokens=False)[0] for text in (NONE_LEAD, CANDIDATE_REF))
        forced_tail = {
            lead: (tok.encode(lead.marker + lead.gap, add_special_tokens=False),
                   tok.encode("\n" + lead.marker + lead.gap, add_special_tokens=False),
                   tok.encode(lead.gap, add_special_tokens=False) if lead.gap else [])
            for lead in (LISTWISE_LEAD, PAIRWISE_LEAD)
        }
        return cls(frozenset(end_of_turn_token_ids(tok)), choice_token_ids(tok, MAX_CHOICES), commit, forced_tail)


class RowStepper:
    """The decoding rules: how a row moves on by one position, given what the model predicts there.

    A subclass says what a position is (`greedy`, `probabilities`, `read_options`) and how the
    generated tokens read as text (`text_of`); these rules are the same for all of them."""

    tokens: DecodingTokens
    max_new_tokens: int

    def greedy(self, position):
        """The most likely token at `position`."""
        raise NotImplementedError

    def probabilities(self, position, tokens: Sequence) -> list[float]:
        """P(token) at `position`, under the model's full next-token distribution, for each of `tokens`."""
        raise NotImplementedError

    def read_options(self, position, options) -> tuple[list[float], float]:
        """(the options' probabilities at `position`, renormalised to sum to 1; the mass they held)."""
        raise NotImplementedError

    def text_of(self, generated: list) -> str:
        raise NotImplementedError

    def advance(self, row: DecodedRow, position, lead: AnswerLead, options, read_commit: bool):
        """Move one row on by one position; returns the token to feed it next, None when it is done."""
        if row.state == READ:
            row.probabilities, row.option_mass = self.read_options(position, options)
            row.state = DONE
        if row.state == GENERATE:
            if read_commit:
                self._read_commit(row, position)
            token = self.greedy(position)
            if token in self.tokens.stop or len(row.generated) >= self.max_new_tokens:
                start_tail, newline_tail, _ = self.tokens.forced_tail[lead]
                at_line_start = not row.text or row.text.endswith("\n")
                row.forced, row.state = True, FEED
                row.queue = list(start_tail if at_line_start else newline_tail)
            else:
                self._append(row, token)
                if lead.complete(row.text):
                    row.state = READ
                elif lead.needs_gap(row.text):
                    row.queue, row.state = list(self.tokens.forced_tail[lead][2]), FEED
                return token
        if row.state == FEED:
            token = row.queue.pop(0)
            self._append(row, token)
            if not row.queue:
                row.state = READ
            return token
        return None

    def _append(self, row: DecodedRow, token) -> None:
        row.generated.append(token)
        row.text = self.text_of(row.generated)

    def _read_commit(self, row: DecodedRow, position) -> None:
        """Before a row's next token: the digit distribution after its first cited "[", and the odds
        of "Closest" against "[" at the first of them it writes."""
        if row.awaiting_digit:
            row.cited = self.probabilities(position, self.tokens.choices[1:])
            row.awaiting_digit = False
        if row.commit is None:
            token = self.greedy(position)
            if token in self.tokens.commit:
                none_lead, cite = self.probabilities(position, self.tokens.commit)
                row.commit = (none_lead, cite)
                row.awaiting_digit = token == self.tokens.commit[1]


class Decoder(RowStepper):
    """Decodes with a transformers model in this process; a position is a row's next-token logits."""

    def __init__(self, model, tokenizer, max_new_tokens: int):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.tokens = DecodingTokens.of(tokenizer)
        self.stop_ids, self.choice_ids, self.commit_ids = self.tokens.stop, self.tokens.choices, self.tokens.commit
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stop_ids)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def encode_prompt(self, text: str) -> list[int]:
        """What `decode` takes for a rendered prompt: its token ids (the text holds its special markers)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, prompts: list[list[int]], lead: AnswerLead, option_ids: list[int],
               read_commit: bool = False) -> Generator[tuple[int, str], None, list[DecodedRow]]:
        """Decode every prompt (see the module docstring); yields (row, text delta) as each row's
        reasoning is written, returns the rows."""
        import torch

        rows = [DecodedRow(list(p)) for p in prompts]
        mask, next_position, logits, cache = self._prefill(prompts)
        option_index = torch.tensor(option_ids, device=logits.device)
        emitted = [""] * len(rows)
        while True:
            feed = [self.advance(row, logits[r], lead, option_index, read_commit) for r, row in enumerate(rows)]
            yield from _new_text(rows, emitted)
            if all(token is None for token in feed):
                return rows
            active = [int(token is not None) for token in feed]
            step = torch.tensor([self.pad_id if t is None else t for t in feed], device=self.device).unsqueeze(1)
            flags = torch.tensor(active, dtype=torch.long, device=self.device).unsqueeze(1)
            mask = torch.cat([mask, flags], dim=1)
            positions = next_position.to(self.device).unsqueeze(1)
            next_position = next_position + flags.squeeze(1).cpu()
            logits, cache = self._forward(step, mask, positions, cache)

    def _prefill(self, prompts: list[list[int]]):
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_position = mask.sum(-1)
        mask = mask.to(self.device)
        logits, cache = self._forward(ids.to(self.device), mask, positions.to(self.device), None)
        return mask, next_position, logits, cache

    def greedy(self, logits) -> int:
        return int(logits.argmax())

    def probabilities(self, logits, tokens: Sequence[int]) -> list[float]:
        import torch

        return torch.softmax(logits, dim=-1)[list(tokens)].tolist()

    def read_options(self, logits, option_index) -> tuple[list[float], float]:
        import torch

        chosen = torch.softmax(logits, dim=-1).index_select(0, option_index)
        mass = float(chosen.sum())
        n = len(option_index)
        return ((chosen / chosen.sum()).tolist() if mass > 0 else [1.0 / n] * n), mass

    def text_of(self, generated: list[int]) -> str:
        return self.tokenizer.decode(generated, skip_special_tokens=False)

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float(), out.past_key_values


def _new_text(rows: list[DecodedRow], emitted: list[str]) -> Iterator[tuple[int, str]]:
    """(row, delta) for each row whose shown reasoning grew since `emitted` (updated in place)."""
    for r, row in enumerate(rows):
        delta = display_delta(row.text, emitted[r])
        if delta:
            yield r, delta
            emitted[r] += delta


def display_delta(text: str, emitted: str) -> str:
    """What the shown reasoning of `text` adds to `emitted` (what was shown of it so far); "" while
    nothing new can be shown: a half-decoded character (U+FFFD) is held back until it is whole."""
    shown = reasoning_display(text)
    if shown.startswith(emitted) and len(shown) > len(emitted) and not shown.endswith("\ufffd"):
        return shown[len(emitted) :]
    return ""


def commit_reading(row: DecodedRow, answer: Sequence[float]) -> list[float]:
    """[P(none), P(1..k)] where the reasoning committed; the answer reading when it never did."""
    if row.commit is None:
        return list(answer)
    none, cite = row.commit
    p_none = none / (none + cite) if none + cite > 0 else answer[0]
    split = row.cited if row.cited and sum(row.cited) > 0 else list(answer[1:])
    total = sum(split) or 1.0
    return [p_none] + [(1 - p_none) * x / total for x in split]


def drain(generator: Generator[str, None, list]) -> list:
    """Run a decoding generator that streams nothing to its end and return its result."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def renormalised(probabilities: Sequence[float]) -> list[float]:
    """A row of a batch reads options for the batch's widest prompt; keep only its own, summing to 1."""
    total = sum(probabilities)
    return [p / total for p in probabilities] if total > 0 else [1.0 / len(probabilities)] * len(probabilities)


__all__ = ["DONE", "FEED", "GENERATE", "READ", "DecodedRow", "Decoder", "DecodingTokens", "RowStepper",
           "commit_reading", "display_delta", "drain", "renormalised"]
