"""The structured judge example: what the data builder writes and the trainer reads.

Examples are stored as data (ticket, candidates, gold choice, reasoning), never as rendered
prompts, so the current `reasoner.prompt` renders them at train time and an old data file still
trains a model for the new prompt version.

One JSON object per line:

    {"id": "banking77:3f2a…:list", "format": "listwise" | "pairwise",
     "ticket": "…", "candidates": [{"id": "…", "question": "…", "answer": "…",
                                    "label": "card_arrival" | null, "score": 0.83}, …],
     "choice": 2, "reasoning": "Asks: …", "source": "banking77", "split": "train",
     "kind": "in_scope" | "removed_true" | "not_retrieved" | "out_of_scope" | "positive" |
             "hard_negative" | "random_negative" | "pair" | "feedback"}

`choice`: listwise = 1-based number of the right candidate, 0 = none of these; pairwise = 1 for
SAME, 0 for DIFFERENT (exactly one candidate).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from reasoner import prompt
from retriever.candidates import Candidate
from training.datasets import DataError, read_jsonl_rows
from training.judge import rationale
from training.splits import text_hash, text_key

KINDS = (
    "in_scope",
    "removed_true",
    "not_retrieved",
    "out_of_scope",
    "positive",
    "hard_negative",
    "random_negative",
    "pair",
    "feedback",
)
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class StoredCandidate:
    id: str
    question: str
    answer: str
    label: str | None
    score: float

    def to_candidate(self, source: str) -> Candidate:
        return Candidate(
            id=self.id,
            question=self.question,
            answer=self.answer,
            label=self.label,
            source=source,
            page=None,
            score=self.score,
            rank_score=self.score,
        )


@dataclass(frozen=True)
class Example:
    id: str
    format: str
    ticket: str
    candidates: tuple[StoredCandidate, ...]
    choice: int
    reasoning: str
    source: str
    split: str
    kind: str
    extra: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        row = {name: getattr(self, name) for name in self.__dataclass_fields__}
        row["candidates"] = [c.__dict__.copy() for c in self.candidates]
        if not row["extra"]:
            del row["extra"]  # keep lines short: most examples carry nothing extra
        return json.dumps(row, ensure_ascii=False, sort_keys=True)

    def prompt_candidates(self) -> list[Candidate]:
        return [c.to_candidate(self.source) for c in self.candidates]

    @property
    def gold_label(self) -> str | None:
        """The label of the right candidate (listwise), None when the answer is "none"."""
        if self.format != prompt.LISTWISE or self.choice == 0:
            return None
        return self.candidates[self.choice - 1].label


def _require(row: dict, key: str, types: type | tuple, where: str):
    if key not in row:
        raise DataError(f"{where}: missing key {key!r}")
    value = row[key]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
        raise DataError(f"{where}: {key!r} must be {_type_names(types)}, got {type(value).__name__}")
    return value


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in _as_tuple(types))


def _candidate_from(row: dict, where: str) -> StoredCandidate:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a candidate must be an object")
    return StoredCandidate(
        id=str(_require(row, "id", (str, int), where)),
        question=_require(row, "question", str, where),
        answer=_require(row, "answer", str, where),
        label=_require(row, "label", (str, type(None)), where),
        score=float(_require(row, "score", (int, float), where)),
    )


def example_from_dict(row: dict, where: str = "row") -> Example:
    """Validate one decoded row; every problem is a DataError naming `where`."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    fmt = _require(row, "format", str, where)
    if fmt not in prompt.FORMATS:
        raise DataError(f"{where}: format must be one of {prompt.FORMATS}, got {fmt!r}")
    ticket = _require(row, "ticket", str, where)
    if not ticket.strip():
        raise DataError(f"{where}: empty ticket")
    raw = _require(row, "candidates", list, where)
    candidates = tuple(_candidate_from(c, f"{where} candidate {i}") for i, c in enumerate(raw, 1))
    choice = _require(row, "choice", int, where)
    _check_choice(fmt, choice, len(candidates), where)
    split = row.get("split", "train")
    if split not in SPLITS:
        raise DataError(f"{where}: split must be one of {SPLITS}, got {split!r}")
    return Example(
        id=str(row.get("id") or text_hash(ticket)[:12]),
        format=fmt,
        ticket=ticket,
        candidates=candidates,
        choice=choice,
        reasoning=_require(row, "reasoning", str, where),
        source=str(row.get("source", "unknown")),
        split=split,
        kind=str(row.get("kind", "in_scope")),
        extra=row.get("extra") or {},
    )


def _check_choice(fmt: str, choice: int, n: int, where: str) -> None:
    if fmt == prompt.PAIRWISE and n != 1:
        raise DataError(f"{where}: a pairwise example needs exactly 1 candidate, got {n}")
    if fmt == prompt.LISTWISE and n == 0:
        raise DataError(f"{where}: a listwise example needs at least 1 candidate")
    top = 1 if fmt == prompt.PAIRWISE else n
    if not 0 <= choice <= top:
        raise DataError(f"{where}: choice {choice} out of range 0..{top}")


def read_examples(path: Path) -> list[Example]:
    """Read and validate a JSONL (or JSONL.gz) file; blank lines are skipped, anything else
    malformed is fatal."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    examples = [example_from_dict(row, where) for where, row in read_jsonl_rows(path)]
    if not examples:
        raise DataError(f"{path}: no examples (empty file)")
    return examples


def write_examples(path: Path, examples: Iterable[Example]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for example in examples:
            handle.write(example.to_json() + "\n")
            count += 1
    return count


def render(example: Example, tokenizer, top_k: int | None = None, shuffle: bool = False) -> tuple[str, str]:
    """(prompt, completion) through the reasoner's prompt module, the only place prompts exist.

    `top_k` keeps the first k candidates of a listwise example (the judge may show fewer than
    the builder stored); a right answer cut off becomes 0, "none of these", with its reasoning
    rebuilt (listwise reasoning only cites the chosen candidate and candidate 1). `shuffle` shows
    the candidates in an order seeded by the example's id (see `shuffled`)."""
    if example.format == prompt.PAIRWISE:
        user = prompt.pairwise_user_message(example.ticket, example.prompt_candidates()[0])
        target = prompt.pairwise_target(example.reasoning, bool(example.choice))
        return prompt.render_example(tokenizer, user, target)
    candidates, choice, reasoning = example.prompt_candidates(), example.choice, example.reasoning
    if top_k is not None and len(candidates) > top_k:
        candidates = candidates[:top_k]
        if choice > top_k:
            pairs = [(c.question, c.answer) for c in candidates]
            choice, reasoning = 0, rationale.listwise(example.ticket, pairs, 0)
    if shuffle:
        candidates, choice, reasoning = shuffled(example.id, candidates, choice, reasoning)
    user = prompt.listwise_user_message(example.ticket, candidates)
    return prompt.render_example(tokenizer, user, prompt.listwise_target(reasoning, choice))


def shuffled(key: str, candidates: list, choice: int, reasoning: str) -> tuple[list, int, str]:
    """The candidates in an order seeded by `key`, with the choice and the reasoning's "[N]"
    references following them.

    Stored examples keep the retriever's order, where the answer is candidate 1 most of the time;
    a judge trained on that order leans on the order instead of reading the texts."""
    order = list(range(len(candidates)))
    random.Random(key).shuffle(order)  # order[new position] = old position
    new_number = {old + 1: new + 1 for new, old in enumerate(order)}
    return [candidates[i] for i in order], new_number.get(choice, 0), prompt.renumber_references(reasoning, new_number)
