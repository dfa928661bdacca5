"""A knowledge base's own escalation floor, derived from its content.

The embedder's floor (`escalate_below` in its embedder.json) was calibrated on intent datasets,
where a resolution has many labelled tickets. It does not transfer to a company's FAQ, one
question per answer: there the similarities of right answers and of near misses sit elsewhere
(measured on a bank's FAQ PDF: 5 of 13 misses were right answers under the 0.61 floor; on StackFAQ
the same floor escalated only 59% of the tickets no FAQ answered).

So for FAQ-style knowledge the floor comes from the knowledge itself. Each FAQ question is asked
against the rest of the knowledge base: its closest *other* entry is what a ticket about something
the knowledge base does not answer looks like from inside it. The floor is the FLOOR_QUANTILE of
those similarities, so about that share of such near-but-different questions would escalate.
No out-of-scope ticket is needed. Intent-style knowledge (most resolutions have several rows)
keeps the embedder's floor, calibrated on exactly that kind of data.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

FLOOR_QUANTILE = 0.8
"""Measured on StackFAQ's held-out FAQs (tuned embedder): out-of-scope recall 59% -> 87%, and the
derived floor within 0.02 of the best one chosen on those tickets."""
MIN_FAQ_ENTRIES = 20
"""Fewer one-row resolutions than this give too noisy a percentile: the embedder's floor stays."""
FAQ_SHARE = 0.5
"""The knowledge base is FAQ-style when at least this share of its resolutions have one row."""
BLOCK = 1024


@dataclass(frozen=True)
class KnowledgeFloor:
    """What the derivation found (shown in the status and the README's terms)."""

    similarity: float | None
    """The floor, rounded down to 0.01; None where the embedder's floor stays (intent-style or too
    few FAQ entries)."""
    faq_entries: int
    """Resolutions with one row (FAQ entries)."""
    resolutions: int

    @property
    def kind(self) -> str:
        return "faq" if self.similarity is not None else "intents"


def derive_floor(rows: Iterable[tuple[str, np.ndarray]]) -> KnowledgeFloor:
    """The floor of a knowledge base given as (resolution key, unit vector) rows."""
    keys, vectors = [], []
    for key, vector in rows:
        keys.append(key)
        vectors.append(vector)
    members: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    single = [rows_of[0] for rows_of in members.values() if len(rows_of) == 1]
    if len(single) < MIN_FAQ_ENTRIES or len(single) < FAQ_SHARE * len(members):
        return KnowledgeFloor(None, len(single), len(members))
    matrix = np.asarray(vectors, dtype=np.float32)
    nearest = np.concatenate([_nearest_other(matrix, single[i : i + BLOCK]) for i in range(0, len(single), BLOCK)])
    floor = round(float(np.floor(np.quantile(nearest.astype(np.float64), FLOOR_QUANTILE) * 100)) / 100, 2)
    return KnowledgeFloor(floor, len(single), len(members))


def _nearest_other(matrix: np.ndarray, rows: list[int]) -> np.ndarray:
    """Each one-row resolution's best similarity to any other row (its own is the only row it has)."""
    similarities = matrix[rows] @ matrix.T
    similarities[np.arange(len(rows)), rows] = -np.inf
    return similarities.max(axis=1)


__all__ = ["FLOOR_QUANTILE", "KnowledgeFloor", "derive_floor"]
