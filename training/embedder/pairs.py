"""Training triplets for MultipleNegativesRankingLoss: (anchor, positive[, hard negative]).

Every knowledge row is an anchor once (or a seeded sample of them, `max_pairs`). Its positive is
another row of its label, chosen by seed. Its hard negative is the row the *base* embedder puts
closest to it among the rows of its knowledge base that have another label or are out of scope:
the mistake the product makes today, which is what the adapter should learn to undo.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from training.labelled import LabelledText

BLOCK = 1024  # anchors per similarity block: bounds memory at BLOCK x group size floats


@dataclass(frozen=True)
class Triplet:
    anchor: str
    positive: str
    negative: str | None
    label: tuple[str, str]
    """The anchor's (group, label); the positive shares it."""
    negative_label: tuple[str, str] | None
    """The hard negative's (group, label); None when it is out of scope (or there is none)."""


@dataclass
class Pairs:
    triplets: list[Triplet]
    anchors_without_positive: int
    """Rows whose label has no other row on the knowledge side (they cannot anchor a pair)."""
    negatives_out_of_scope: int
    """Hard negatives that are out-of-scope rows."""

    def counts(self) -> dict:
        return {"triplets": len(self.triplets),
                "with_hard_negative": sum(t.negative is not None for t in self.triplets),
                "hard_negatives_out_of_scope": self.negatives_out_of_scope,
                "anchors_without_positive": self.anchors_without_positive}


def _positives(rows: list[LabelledText], rng: random.Random) -> list[str | None]:
    """Another row of the same label for each row (rows were de-duplicated by normalised text,
    so any other row of the label is another text)."""
    by_label: dict[tuple, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        by_label[row.key].append(index)
    positives = []
    for index, row in enumerate(rows):
        members = by_label[row.key]
        if len(members) < 2:
            positives.append(None)
            continue
        pick = rng.randrange(len(members) - 1)
        pick += pick >= members.index(index)  # skip the row itself
        positives.append(rows[members[pick]].text)
    return positives


def _hard_negatives(anchors: np.ndarray, anchor_keys: list, pool: np.ndarray, pool_keys: list) -> list[int | None]:
    """Index in `pool` of each anchor's nearest row with another key (None keys never match);
    None when there is no such row."""
    key_ids = {key: i for i, key in enumerate(dict.fromkeys(anchor_keys + pool_keys)) if key is not None}
    pool_ids = np.array([key_ids.get(k, -1) for k in pool_keys])
    chosen = []
    for start in range(0, len(anchors), BLOCK):
        sims = anchors[start : start + BLOCK] @ pool.T
        own = np.array([key_ids[k] for k in anchor_keys[start : start + BLOCK]])
        sims[own[:, None] == pool_ids[None, :]] = -np.inf
        best = sims.argmax(axis=1)
        # a knowledge base with a single label has no other label to contrast with
        chosen += [int(j) if np.isfinite(sims[r, j]) else None for r, j in enumerate(best)]
    return chosen


def mine(knowledge: list[LabelledText], knowledge_vectors: np.ndarray, negatives: list[LabelledText],
         negative_vectors: np.ndarray, seed: int, max_pairs: int = 0, hard_negatives: bool = True) -> Pairs:
    """Triplets from the knowledge side; vectors are the base model's, unit length, row-aligned."""
    rng = random.Random(seed)
    positives = _positives(knowledge, rng)
    anchors = [i for i, p in enumerate(positives) if p is not None]
    if max_pairs and len(anchors) > max_pairs:
        anchors = sorted(rng.sample(anchors, max_pairs))
    negative_of = _negatives_by_group(knowledge, knowledge_vectors, negatives, negative_vectors, anchors) \
        if hard_negatives else {}
    triplets, out_of_scope = [], 0
    for i in anchors:
        negative = negative_of.get(i)
        out_of_scope += negative is not None and negative.label is None
        triplets.append(Triplet(knowledge[i].text, positives[i], negative.text if negative else None,
                                knowledge[i].key, negative.key if negative else None))
    return Pairs(triplets, len(knowledge) - sum(p is not None for p in positives), out_of_scope)


def _negatives_by_group(knowledge, knowledge_vectors, negatives, negative_vectors, anchors) -> dict[int, LabelledText]:
    rows = knowledge + negatives
    vectors = np.concatenate([knowledge_vectors, negative_vectors]) if len(negatives) else knowledge_vectors
    members: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        members[row.group].append(index)
    found = {}
    for group, pool in members.items():
        group_anchors = [i for i in anchors if knowledge[i].group == group]
        if not group_anchors:
            continue
        chosen = _hard_negatives(vectors[group_anchors], [knowledge[i].key for i in group_anchors],
                                 vectors[pool], [rows[j].key for j in pool])
        found.update({i: rows[pool[j]] for i, j in zip(group_anchors, chosen) if j is not None})
    return found
