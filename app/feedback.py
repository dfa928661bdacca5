"""Every answer the product gives, and what agents said about it, in SQLite under `--home`.

Two tables:
- `answers`: one row per ticket answered through the service (ticket, the retriever's candidates,
  the verdict as the `ask --json` object, the model that gave it, when);
- `feedback`: at most one row per answer, updated in place: the rating (up/down) and, optionally,
  the candidate the agent named as the right one, or "none" (nothing matches: escalate).

`export_feedback` turns them into training examples, one JSON object per line:

    {"ticket": str, "candidates": [Candidate.to_dict(), ...], "correct_id": str | null,
     "verdict_id": str | null, "rating": "up" | "down", "model": str, "created_at": float}

`correct_id` is the candidate the agent named; a 👍 without naming one confirms the verdict (its
match id, or null when it escalated); "none" becomes null (the right answer was to escalate).
A 👎 without a named candidate says the verdict was wrong but not what was right: it stays in the
database and is not exported. `created_at` is when the feedback was (last) given.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

UP, DOWN = "up", "down"
RATINGS = (UP, DOWN)
NONE_ID = "none"
"""What an agent names when no candidate answers the ticket (the answer was to escalate)."""

_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS answers (
    id TEXT PRIMARY KEY,
    ticket TEXT NOT NULL,
    candidates TEXT NOT NULL,
    verdict TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    answer_id TEXT PRIMARY KEY REFERENCES answers(id) ON DELETE CASCADE,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    correct_id TEXT,
    created_at REAL NOT NULL
);
"""


class FeedbackError(ValueError):
    """Feedback that cannot be stored as given; the message says why."""


class UnknownAnswer(FeedbackError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else "unknown answer"


@dataclass(frozen=True)
class StoredAnswer:
    id: str
    ticket: str
    candidates: list[dict]
    """The retriever's candidates as `Candidate.to_dict()` (what the judge was shown)."""
    verdict: dict
    """The `ask --json` object."""
    model: str
    created_at: float

    @property
    def verdict_id(self) -> str | None:
        match = self.verdict.get("match")
        return match.get("id") if isinstance(match, dict) else None

    @property
    def candidate_ids(self) -> list[str]:
        return [str(c["id"]) for c in self.candidates]


@dataclass(frozen=True)
class FeedbackRecord:
    answer_id: str
    rating: str
    correct_id: str | None
    """A candidate id, "none", or None when the agent did not name one."""
    created_at: float

    def to_dict(self) -> dict:
        return {"answer_id": self.answer_id, "rating": self.rating, "correct_id": self.correct_id,
                "created_at": self.created_at}


class FeedbackStore:
    """Thread-safe: one connection, one lock (writes are tiny)."""

    def __init__(self, db_path: str | Path):
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- answers ------------------------------------------------------------------------------

    def record_answer(self, ticket: str, candidates: Sequence[dict], verdict: dict, model: str) -> str:
        answer_id = uuid.uuid4().hex
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO answers(id, ticket, candidates, verdict, model, created_at) VALUES (?,?,?,?,?,?)",
                (answer_id, ticket, json.dumps(list(candidates)), json.dumps(verdict), model, time.time()),
            )
        return answer_id

    def answer(self, answer_id: str) -> StoredAnswer | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, ticket, candidates, verdict, model, created_at FROM answers WHERE id = ?",
                (answer_id,),
            ).fetchone()
        return _answer_from_row(row) if row else None

    # -- feedback -----------------------------------------------------------------------------

    def give(self, answer_id: str, rating: str | None = None, correct_id: str | None = None) -> FeedbackRecord:
        """Store (or update) the feedback on one answer.

        `rating` is "up" or "down"; `correct_id` a candidate id of that answer or "none". Either may be
        left out, not both: naming a candidate without a rating rates the verdict by whether it named
        the same thing; a rating without a name keeps a name given earlier.
        """
        if rating is not None and rating not in RATINGS:
            raise FeedbackError(f"rating must be 'up' or 'down', not {rating!r}")
        if rating is None and correct_id is None:
            raise FeedbackError("give a rating ('up'/'down'), the right candidate's id, or both")
        answer = self.answer(answer_id)
        if answer is None:
            raise UnknownAnswer(f"no answer with id {answer_id!r}")
        if correct_id is not None:
            correct_id = str(correct_id)
            if correct_id.lower() == NONE_ID:
                correct_id = NONE_ID
            elif correct_id not in answer.candidate_ids:
                raise FeedbackError(
                    f"{correct_id!r} is not one of this answer's candidates "
                    f"({', '.join(answer.candidate_ids) or 'there were none'}) nor 'none'"
                )
        if rating is None:
            named = None if correct_id == NONE_ID else correct_id
            rating = UP if named == answer.verdict_id else DOWN
        now = time.time()
        with self._lock, self._db:
            if correct_id is None:
                row = self._db.execute(
                    "SELECT correct_id FROM feedback WHERE answer_id = ?", (answer_id,)
                ).fetchone()
                correct_id = row[0] if row else None
            self._db.execute(
                "INSERT INTO feedback(answer_id, rating, correct_id, created_at) VALUES (?,?,?,?) "
                "ON CONFLICT(answer_id) DO UPDATE SET rating = excluded.rating, "
                "correct_id = excluded.correct_id, created_at = excluded.created_at",
                (answer_id, rating, correct_id, now),
            )
        return FeedbackRecord(answer_id, rating, correct_id, now)

    def feedback(self, answer_id: str) -> FeedbackRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT answer_id, rating, correct_id, created_at FROM feedback WHERE answer_id = ?",
                (answer_id,),
            ).fetchone()
        return FeedbackRecord(*row) if row else None

    def counts(self) -> dict:
        with self._lock:
            answers = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            rated = dict(self._db.execute("SELECT rating, COUNT(*) FROM feedback GROUP BY rating").fetchall())
        return {"answers": answers, "up": rated.get(UP, 0), "down": rated.get(DOWN, 0)}

    def training_examples(self) -> Iterator[dict]:
        """The exportable feedback, oldest first (see the module docstring)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.id, a.ticket, a.candidates, a.verdict, a.model, a.created_at, "
                "f.rating, f.correct_id, f.created_at "
                "FROM feedback f JOIN answers a ON a.id = f.answer_id ORDER BY f.created_at, a.id"
            ).fetchall()
        for row in rows:
            answer = _answer_from_row(row[:6])
            rating, named, given_at = row[6], row[7], row[8]
            if named is not None:
                correct = None if named == NONE_ID else named
            elif rating == UP:
                correct = answer.verdict_id
            else:
                continue  # 👎 without naming the right one: no label to learn from
            yield {
                "ticket": answer.ticket,
                "candidates": answer.candidates,
                "correct_id": correct,
                "verdict_id": answer.verdict_id,
                "rating": rating,
                "model": answer.model,
                "created_at": given_at,
            }


def _answer_from_row(row) -> StoredAnswer:
    return StoredAnswer(row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4], row[5])


def export_feedback(db_path: str | Path, out_path: str | Path) -> int:
    """Write the feedback in `db_path` as JSONL training examples to `out_path`; returns the count.

    The file is written whole or not at all (temporary file, then rename). A missing database
    exports nothing (an empty file).
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    db = Path(db_path)
    examples: list[dict] = []
    if db.exists():
        store = FeedbackStore(db)
        try:
            examples = list(store.training_examples())
        finally:
            store.close()
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=out.parent, prefix=f".{out.name}-", delete=False
    )
    try:
        with handle:
            for example in examples:
                handle.write(json.dumps(example, ensure_ascii=False) + "\n")
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, out)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return len(examples)
