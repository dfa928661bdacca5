"""Agents' feedback from the web page -> judge examples in the builder's format.

The web page's export (`agent-helper feedback export FILE`) may write either
- finished examples (schema.py's format, with "format" and "choice"), passed through as they are; or
- raw feedback, one JSON object per line (what `ui/feedback.py` exports):

      {"ticket": "…",
       "candidates": [{"id": "…", "question": "…", "answer": "…", "label": "…" | null,
                       "score": 0.71, …}, …],            # Candidate.to_dict(), in shown order
       "correct_id": "…" | null,                         # the right candidate; null = none fits
                                                         # ("chosen_id" is accepted too)
       "chosen_candidate": {…}}                          # optional: the right FAQ when it was
                                                         # not among the candidates shown
  Other keys (rating, verdict_id, model, created_at) are ignored.

  A chosen FAQ that was not shown replaces the lowest-scored candidate (then the list is re-sorted
  by score), so the example still teaches the right answer. Rows that name an unknown id without
  `chosen_candidate` are skipped and counted.

`example_from_feedback` is the function for code that writes such files directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from reasoner import prompt
from training.judge import rationale
from training.judge.data.build import split_of
from training.judge.data.schema import (
    DataError,
    read_jsonl_rows,
    Example,
    StoredCandidate,
    _candidate_from,
    example_from_dict,
    text_hash,
)


@dataclass
class FeedbackLoad:
    examples: list[Example]
    skipped: int


def _candidate(value, where: str) -> StoredCandidate:
    if hasattr(value, "to_dict"):  # a retriever Candidate
        value = value.to_dict()
    return _candidate_from(value, where)


def example_from_feedback(
    ticket: str,
    candidates: Sequence,
    chosen_id: str | None,
    chosen_candidate=None,
    *,
    split: str | None = None,
    seed: int = 13,
    validation_share: float = 0.1,
    where: str = "feedback",
) -> Example:
    """One listwise example from a ticket, the candidates shown (dicts or `Candidate`s, in order),
    and the id the agent named as right (None = none fits)."""
    if not ticket or not ticket.strip():
        raise DataError(f"{where}: empty ticket")
    shown = [_candidate(c, f"{where} candidate {i}") for i, c in enumerate(candidates, 1)]
    if not shown:
        raise DataError(f"{where}: no candidates")
    ids = [c.id for c in shown]
    if chosen_id is not None and str(chosen_id) not in ids:
        if chosen_candidate is None:
            raise DataError(f"{where}: chosen_id {chosen_id!r} is not among the candidates")
        right = _candidate(chosen_candidate, f"{where} chosen_candidate")
        shown = sorted(shown[:-1] + [right], key=lambda c: -c.score)
        ids = [c.id for c in shown]
    choice = 0 if chosen_id is None else ids.index(str(chosen_id)) + 1
    reasoning = rationale.listwise(ticket, [(c.question, c.answer) for c in shown], choice)
    return Example(
        id=f"feedback:{text_hash(ticket)[:12]}",
        format=prompt.LISTWISE,
        ticket=ticket,
        candidates=tuple(shown),
        choice=choice,
        reasoning=reasoning,
        source="feedback",
        split=split or split_of(ticket, seed, validation_share),
        kind="feedback",
    )


def load_feedback(path: Path, seed: int = 13, validation_share: float = 0.1) -> FeedbackLoad:
    """Read a feedback export; malformed JSON is fatal (names the line), unknown ids are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: feedback file not found")
    examples, skipped = [], 0
    for where, row in read_jsonl_rows(path):
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object")
        if "format" in row and "choice" in row:
            examples.append(example_from_dict(row, where))
            continue
        try:
            examples.append(_from_raw(row, where, seed, validation_share))
        except DataError as error:
            if "not among the candidates" not in str(error):
                raise
            skipped += 1
    return FeedbackLoad(examples, skipped)


def _from_raw(row: dict, where: str, seed: int, validation_share: float) -> Example:
    for key in ("ticket", "candidates"):
        if key not in row:
            raise DataError(f"{where}: missing key {key!r}")
    id_key = next((k for k in ("correct_id", "chosen_id") if k in row), None)
    if id_key is None:
        raise DataError(f"{where}: missing key 'correct_id' (the right candidate's id, or null)")
    if not isinstance(row["candidates"], list):
        raise DataError(f"{where}: 'candidates' must be a list")
    return example_from_feedback(
        str(row["ticket"]),
        row["candidates"],
        row[id_key],
        row.get("chosen_candidate"),
        split=row.get("split"),
        seed=seed,
        validation_share=validation_share,
        where=where,
    )
