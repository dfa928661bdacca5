"""Greedy decoding for the judge on a transformers model: batched, KV-cached, streamed.

Each prompt is decoded token by token until the model has written its answer lead ("Answer: ";
when it has not within `max_new_tokens`, or ends its turn first, the lead is fed to it), then the
next-token distribution restricted to the option tokens is read. Prompts of a batch are
left-padded and decoded together; a finished row keeps feeding padding (masked out) until the
slowest row is done. Listwise decoding also records where the reasoning commits (`commit_reading`).

The model is any transformers causal LM called with input_ids, attention_mask, position_ids and
past_key_values (tests drive it with a scripted stand-in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generator, Iterator, Sequence

from reasoner.prompt import (
    CANDIDATE_REF, LISTWISE_LEAD, MAX_CHOICES, NONE_LEAD, PAIRWISE_LEAD, AnswerLead, choice_token_ids,
    end_of_turn_token_ids, reasoning_display,
)

_GEN, _FORCE, _READ, _DONE = range(4)


@dataclass
class DecodedRow:
    """One prompt's decoding: what was generated, and the distributions read from it."""

    prompt_ids: list[int]
    generated: list[int] = field(default_factory=list)
    text: str = ""
    state: int = _GEN
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


class Decoder:
    """Token ids that decoding needs, read once from the tokenizer, and the decoding loop."""

    def __init__(self, model, tokenizer, max_new_tokens: int):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        tok = tokenizer
        self.stop_ids = set(end_of_turn_token_ids(tok))
        self.choice_ids = choice_token_ids(tok, MAX_CHOICES)
        none_lead, cite = (tok.encode(" " + text, add_special_tokens=False)[0] for text in (NONE_LEAD, CANDIDATE_REF))
        self.commit_ids = (none_lead, cite)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(self.stop_ids)
        self.forced_tail = {
            lead: (tok.encode(lead.marker + lead.gap, add_special_tokens=False),
                   tok.encode("\n" + lead.marker + lead.gap, add_special_tokens=False),
                   tok.encode(lead.gap, add_special_tokens=False) if lead.gap else [])
            for lead in (LISTWISE_LEAD, PAIRWISE_LEAD)
        }

    @property
    def device(self):
        return next(self.model.parameters()).device

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
            feed = [self._advance(row, logits[r], lead, option_index, read_commit) for r, row in enumerate(rows)]
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

    def _advance(self, row: DecodedRow, logits, lead: AnswerLead, option_index, read_commit: bool) -> int | None:
        """Move one row on by one token; returns the token to feed it next, None when it is done."""
        if row.state == _READ:
            self._read_options(row, logits, option_index)
        if row.state == _GEN:
            if read_commit:
                self._read_commit(row, logits)
            token = int(logits.argmax())
            if token in self.stop_ids or len(row.generated) >= self.max_new_tokens:
                start_tail, newline_tail, _ = self.forced_tail[lead]
                at_line_start = not row.text or row.text.endswith("\n")
                row.forced, row.state = True, _FORCE
                row.queue = list(start_tail if at_line_start else newline_tail)
            else:
                self._append(row, token)
                if lead.complete(row.text):
                    row.state = _READ
                elif lead.needs_gap(row.text):
                    row.queue, row.state = list(self.forced_tail[lead][2]), _FORCE
                return token
        if row.state == _FORCE:
            token = row.queue.pop(0)
            self._append(row, token)
            if not row.queue:
                row.state = _READ
            return token
        return None

    def _append(self, row: DecodedRow, token: int) -> None:
        row.generated.append(token)
        row.text = self.tokenizer.decode(row.generated, skip_special_tokens=False)

    @staticmethod
    def _read_options(row: DecodedRow, logits, option_index) -> None:
        import torch

        chosen = torch.softmax(logits, dim=-1).index_select(0, option_index)
        row.option_mass = float(chosen.sum())
        n = len(option_index)
        row.probabilities = (chosen / chosen.sum()).tolist() if row.option_mass > 0 else [1.0 / n] * n
        row.state = _DONE

    def _read_commit(self, row: DecodedRow, logits) -> None:
        """Before a row's next token: the digit distribution after its first cited "[", and the odds
        of "Closest" against "[" at the first of them it writes."""
        import torch

        if row.awaiting_digit:
            row.cited = torch.softmax(logits, dim=-1)[self.choice_ids[1:]].tolist()
            row.awaiting_digit = False
        if row.commit is None:
            token = int(logits.argmax())
            if token in self.commit_ids:
                probs = torch.softmax(logits, dim=-1)
                none_lead, cite = self.commit_ids
                row.commit = (float(probs[none_lead]), float(probs[cite]))
                row.awaiting_digit = token == cite

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float(), out.past_key_values


def _new_text(rows: list[DecodedRow], emitted: list[str]) -> Iterator[tuple[int, str]]:
    """(row, delta) for each row whose shown reasoning grew since `emitted` (updated in place); a
    half-decoded character (U+FFFD) is held back until it is whole."""
    for r, row in enumerate(rows):
        shown = reasoning_display(row.text)
        if shown.startswith(emitted[r]) and len(shown) > len(emitted[r]) and not shown.endswith("\ufffd"):
            yield r, shown[len(emitted[r]) :]
            emitted[r] = shown


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


__all__ = ["DecodedRow", "Decoder", "commit_reading", "drain", "renormalised"]
