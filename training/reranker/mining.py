"""Candidate lists made the way the product's retriever makes them (retriever/hybrid.py, dense part).

For each ticket, within its own knowledge base: the `pool` nearest knowledge rows by cosine; each
resolution (label) among them scored by the mean similarity of its best `label_votes` rows; the
resolutions in that order, each shown by its closest row (question + answer), as the product's
Candidate is. BM25's extra rows are left out: they only add rows the embedder missed.

- training tickets are the knowledge rows themselves, queried leave-one-out (their own row
  removed). The positive is the ticket's own label, shown by its nearest *other* row; it is
  forced into the list when the retriever missed it. The hard negatives are the retriever's best
  other labels: the mistakes the reranker must learn to undo;
- validation tickets are matched against the whole knowledge side; their label may be missing
  from the list (a retrieval miss) or be None (out of scope).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from training.labelled import LabelledText

BLOCK = 512  # tickets per similarity block: bounds memory at BLOCK x knowledge-base size floats


@dataclass(frozen=True)
class Candidates:
    """One ticket's resolutions, the retriever's best first."""

    ticket: str
    group: str
    rows: list[int]
    """Index into the knowledge rows of each resolution's closest row."""
    votes: list[float]
    """Each resolution's label vote (the product's `Candidate.label_score`)."""
    positive: int | None
    """Position of the ticket's own resolution in the list; None: missing or out of scope."""
    in_scope: bool = True
    """False: nothing in the knowledge base answers the ticket (it should escalate)."""


def _ranked(sims: np.ndarray, keys: list, pool: int, votes: int) -> list[tuple[object, int, float]]:
    """(label key, closest row, vote) per label among the `pool` nearest rows, best vote first."""
    pool = min(pool, int(np.isfinite(sims).sum()))
    if pool <= 0:
        return []
    top = np.argpartition(-sims, pool - 1)[:pool]
    top = top[np.argsort(-sims[top], kind="stable")]
    members: dict[object, list[int]] = defaultdict(list)
    for j in top:
        members[keys[j]].append(int(j))
    scored = [(key, rows[0], float(np.mean(sims[rows[:votes]]))) for key, rows in members.items()]
    return sorted(scored, key=lambda item: (item[2], sims[item[1]]), reverse=True)


def _own_label(sims: np.ndarray, rows_of_label: list[int], votes: int) -> tuple[int, float] | None:
    """The ticket's own label scored over all its (other) rows, when the pool missed it."""
    values = sims[rows_of_label]
    finite = [j for j, v in zip(rows_of_label, values) if np.isfinite(v)]
    if not finite:
        return None
    finite.sort(key=lambda j: -sims[j])
    return finite[0], float(np.mean(sims[finite[:votes]]))


def mine_group(tickets: list[LabelledText], ticket_vectors: np.ndarray, knowledge: list[LabelledText],
               knowledge_vectors: np.ndarray, length: int, pool: int, votes: int,
               own_rows: list[int] | None = None) -> list[Candidates]:
    """Lists for tickets of one knowledge base. `own_rows` (leave-one-out): each ticket's own row
    in `knowledge`, removed from its search; its label is then forced in as the positive."""
    keys = [row.key for row in knowledge]
    rows_of: dict[object, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        rows_of[key].append(index)
    out = []
    for start in range(0, len(tickets), BLOCK):
        sims_block = ticket_vectors[start : start + BLOCK] @ knowledge_vectors.T
        for offset, sims in enumerate(sims_block):
            ticket = tickets[start + offset]
            if own_rows is not None:
                sims[own_rows[start + offset]] = -np.inf
            ranked = _ranked(sims, keys, pool, votes)[:length]
            if own_rows is not None:
                ranked = _force_positive(ranked, ticket.key, sims, rows_of[ticket.key], votes, length)
                if ranked is None:
                    continue  # a label with one row has no other row to be its positive
            labels = [key for key, _, _ in ranked]
            positive = labels.index(ticket.key) if ticket.key in labels else None
            out.append(Candidates(ticket.text, ticket.group, [row for _, row, _ in ranked],
                                  [vote for _, _, vote in ranked], positive, ticket.key is not None))
    return out


def _force_positive(ranked, key, sims, rows_of_label, votes, length):
    if any(item[0] == key for item in ranked):
        return ranked
    own = _own_label(sims, rows_of_label, votes)
    if own is None:
        return None
    return ranked[: length - 1] + [(key, own[0], own[1])]


def by_group(rows: list[LabelledText]) -> dict[str, list[int]]:
    members: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        members[row.group].append(index)
    return members


def mine_training(ticket_rows: list[int], knowledge: list[LabelledText], vectors: np.ndarray, length: int,
                  pool: int, votes: int) -> list[Candidates]:
    """Leave-one-out lists for the knowledge rows `ticket_rows`; `rows` index `knowledge`."""
    chosen = set(ticket_rows)
    lists = []
    for group, k_index in by_group(knowledge).items():
        own = [position for position, i in enumerate(k_index) if i in chosen]
        group_rows = [knowledge[i] for i in k_index]
        found = mine_group([group_rows[p] for p in own], vectors[k_index][own], group_rows, vectors[k_index],
                           length, pool, votes, own_rows=own)
        lists += [_global(item, k_index) for item in found]
    return lists


def mine_validation(tickets: list[LabelledText], ticket_vectors: np.ndarray, knowledge: list[LabelledText],
                    knowledge_vectors: np.ndarray, length: int, pool: int, votes: int) -> list[Candidates]:
    """Lists for validation tickets against their knowledge base; `rows` index `knowledge`. Tickets
    of a knowledge base with no knowledge row get no list (the product escalates them)."""
    knowledge_groups = by_group(knowledge)
    lists = []
    for group, t_index in by_group(tickets).items():
        k_index = knowledge_groups.get(group, [])
        if k_index:
            found = mine_group([tickets[i] for i in t_index], ticket_vectors[t_index], [knowledge[i] for i in k_index],
                               knowledge_vectors[k_index], length, pool, votes)
            lists += [_global(item, k_index) for item in found]
    return lists


def _global(item: Candidates, k_index: list[int]) -> Candidates:
    return Candidates(item.ticket, item.group, [k_index[r] for r in item.rows], item.votes, item.positive,
                      item.in_scope)


def sample_indices(count: int, limit: int, seed: int) -> list[int]:
    """A seeded sample of at most `limit` of range(count) (all with limit 0), in order."""
    if not limit or count <= limit:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), limit))
