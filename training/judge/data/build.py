"""Turn labelled customer-service data into judge examples (see schema.py for the row format).

Per source and split:
- listwise: each in-scope ticket gets the top-k labels of its split's knowledge base (leave-one-out)
  as candidates; the answer is the position of its own label, or 0 when the label was not
  retrieved. A share of tickets is searched again with their own label withheld (answer 0, so the
  model learns to escalate), and out-of-scope tickets (CLINC150 "oos") always answer 0.
- pairwise: a share of tickets give one positive (best row of their own label) and one negative
  (the retriever's highest other label: a hard negative; a fixed share are random other labels),
  plus Medical Question Pairs as they come.

Balance (training split only; validation keeps the retriever's natural answer positions so its
numbers mean what they say): each label keeps at most the median number of examples per label;
answer 1 (the retriever was already right) is capped at `max_first_share` of in-scope examples;
"none" answers make up `none_share` of listwise examples (out-of-scope first); pairwise is 1:1.

Leak-free means here: every text (ticket or candidate question) belongs to exactly one split,
chosen by a seeded hash of its normalised text, and candidates are drawn only from the ticket's
own split. So no text in a validation example appears anywhere in a training example, as ticket
or as candidate. StackFAQ queries follow their FAQ entry's split (the FAQ bank is the knowledge
base there); MQP pairs follow their first question. A final check drops any validation example
that still shares a text with training (cross-source duplicates) and counts it in the manifest.

Everything is deterministic for a seed: string-seeded RNGs per (source, split, purpose), stable
sorts, sorted JSON keys.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from statistics import median
from typing import Sequence

from reasoner import prompt
from training.judge import rationale
from training.judge.data import mining
from training.judge.data.options import BuildOptions
from training.judge.data.schema import Example, StoredCandidate
from training.splits import held_out, text_hash, text_key
from training.datasets import Row, Source

TRAIN, VALIDATION = "train", "validation"


@dataclass
class BuildResult:
    train: list[Example]
    validation: list[Example]
    manifest: dict


def split_of(text: str, seed: int, validation_share: float) -> str:
    """"train" or "validation" by the one seeded split (training/splits.py)."""
    return VALIDATION if held_out(text, validation_share, seed) else TRAIN


def rng_for(seed: int, *parts: str) -> random.Random:
    return random.Random("\x00".join([str(seed), *parts]))


def _stored(source: str, hit: mining.Hit) -> StoredCandidate:
    return StoredCandidate(
        id=f"{source}:{text_hash(hit.row.text)[:10]}",
        question=hit.row.text,
        answer=hit.row.answer,
        label=hit.row.label or None,
        score=round(hit.score, 4),
    )


def _listwise(source: str, split: str, ticket: str, hits, choice: int, kind: str) -> Example:
    candidates = tuple(_stored(source, h) for h in hits)
    reasoning = rationale.listwise(ticket, [(c.question, c.answer) for c in candidates], choice)
    return Example(
        id=f"{source}:{text_hash(ticket)[:12]}:{kind}",
        format=prompt.LISTWISE,
        ticket=ticket,
        candidates=candidates,
        choice=choice,
        reasoning=reasoning,
        source=source,
        split=split,
        kind=kind,
    )


def _pairwise(source: str, split: str, ticket: str, hit: mining.Hit, same: bool, kind: str) -> Example:
    candidate = _stored(source, hit)
    return Example(
        id=f"{source}:{text_hash(ticket)[:12]}:{candidate.id.rsplit(':', 1)[-1][:6]}:{kind}",
        format=prompt.PAIRWISE,
        ticket=ticket,
        candidates=(candidate,),
        choice=int(same),
        reasoning=rationale.pairwise(ticket, candidate.question, candidate.answer, same),
        source=source,
        split=split,
        kind=kind,
    )


def _position(hits, label: str) -> int:
    return next((i for i, h in enumerate(hits, 1) if h.row.label == label), 0)


@dataclass
class SplitData:
    """One source's texts that fell into one split, with the pool candidates come from."""

    name: str
    split: str
    tickets: list[Row]
    out_of_scope: list[str]
    pool: mining.Pool | None
    vectors: dict


def _split_source(source: Source, opts: BuildOptions, vectors: dict, dim: int) -> list[SplitData]:
    def side(text: str) -> str:
        return split_of(text, opts.seed, opts.validation_share)

    kb = source.kb if source.kb is not None else source.tickets
    # StackFAQ: a query must find its FAQ entry, so it follows that entry's split.
    faq_split = {r.label: side(r.text) for r in kb} if source.kb is not None else None
    out = []
    for split in (TRAIN, VALIDATION):
        pool_rows = [r for r in kb if side(r.text) == split]
        if faq_split is None:
            tickets = [r for r in source.tickets if side(r.text) == split]
        else:
            tickets = [r for r in source.tickets if faq_split.get(r.label) == split]
        oos = [t for t in source.out_of_scope if side(t) == split]
        pool = (mining.Pool(pool_rows, mining.stack([r.text for r in pool_rows], vectors, dim), opts.label_votes)
                if pool_rows else None)
        out.append(SplitData(source.name, split, tickets, oos, pool, vectors))
    return out


def _vectors(data: SplitData, texts: Sequence[str]):
    dim = data.pool.vectors.shape[1]
    return mining.stack(list(texts), data.vectors, dim)


def listwise_examples(data: SplitData, opts: BuildOptions) -> dict[str, list[Example]]:
    """All candidate listwise examples of one split, by kind, before balancing."""
    by_kind: dict[str, list[Example]] = defaultdict(list)
    if data.pool is None:
        return by_kind
    texts = [t.text for t in data.tickets]
    searches = data.pool.search(texts, _vectors(data, texts), opts.top_k)
    for ticket, found in zip(data.tickets, searches):
        choice = _position(found.hits, ticket.label)
        kind = "in_scope" if choice else "not_retrieved"
        by_kind[kind].append(_listwise(data.name, data.split, ticket.text, found.hits, choice, kind))
    rng = rng_for(opts.seed, data.name, data.split, "removed")
    chosen = [t for t in data.tickets if rng.random() < opts.removed_true_rate]
    texts = [t.text for t in chosen]
    searches = data.pool.search(texts, _vectors(data, texts), opts.top_k, withhold=[t.label for t in chosen])
    for ticket, found in zip(chosen, searches):
        if found.hits:
            by_kind["removed_true"].append(
                _listwise(data.name, data.split, ticket.text, found.hits, 0, "removed_true")
            )
    oos = data.out_of_scope
    for text, found in zip(oos, data.pool.search(oos, _vectors(data, oos), opts.top_k)):
        by_kind["out_of_scope"].append(_listwise(data.name, data.split, text, found.hits, 0, "out_of_scope"))
    return by_kind


def pairwise_examples(data: SplitData, opts: BuildOptions) -> list[Example]:
    """Positive and negative pairs, one of each per chosen ticket (so always 1:1)."""
    if data.pool is None:
        return []
    rng = rng_for(opts.seed, data.name, data.split, "pairs")
    chosen = [t for t in data.tickets if rng.random() < opts.pair_rate]
    texts = [t.text for t in chosen]
    searches = data.pool.search(texts, _vectors(data, texts), opts.top_k, want=[t.label for t in chosen])
    examples = []
    for ticket, found in zip(chosen, searches):
        negative = _negative(data, ticket, found, rng, opts)
        if found.wanted is None or negative is None:
            continue
        examples.append(_pairwise(data.name, data.split, ticket.text, found.wanted, True, "positive"))
        examples.append(_pairwise(data.name, data.split, ticket.text, negative[0], False, negative[1]))
    return examples


def _negative(data: SplitData, ticket: Row, found: mining.Search, rng: random.Random, opts: BuildOptions):
    draw = rng.random()  # drawn for every ticket so one ticket's outcome never shifts the others'
    pick = rng.randrange(len(data.pool))
    if draw < opts.random_negative_share:
        row = data.pool.rows[pick]
        if row.label != ticket.label and text_key(row.text) != text_key(ticket.text):
            score = float(data.vectors[text_key(row.text)] @ data.vectors[text_key(ticket.text)])
            return mining.Hit(row, score), "random_negative"
    hard = next((h for h in found.hits if h.row.label != ticket.label), None)
    return (hard, "hard_negative") if hard else None


def pair_examples(source: Source, opts: BuildOptions, vectors: dict) -> dict[str, list[Example]]:
    """Ready-made duplicate / not-duplicate pairs (MQP), split by their first question."""
    out: dict[str, list[Example]] = {TRAIN: [], VALIDATION: []}
    for first, second, same in source.pairs:
        split = split_of(first, opts.seed, opts.validation_share)
        score = float(vectors[text_key(first)] @ vectors[text_key(second)])
        hit = mining.Hit(Row(second, "", ""), score)  # no label, no answer: a bare question pair
        out[split].append(_pairwise(source.name, split, first, hit, same, "pair"))
    return out


def balance_listwise(by_kind: dict[str, list[Example]], opts: BuildOptions, rng: random.Random) -> list[Example]:
    in_scope = _cap_per_label(by_kind.get("in_scope", []), rng)
    in_scope = _cap_first(in_scope, opts.max_first_share, rng)
    return in_scope + _nones(by_kind, len(in_scope), opts.none_share, rng)


def _cap_per_label(examples: list[Example], rng: random.Random) -> list[Example]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        groups[example.gold_label].append(example)
    if not groups:
        return []
    cap = math.ceil(median(len(g) for g in groups.values()))
    kept = []
    for label in sorted(groups):
        group = groups[label][:]
        rng.shuffle(group)
        group.sort(key=lambda e: e.choice == 1)  # stable: hard examples (answer > 1) first
        kept += group[:cap]
    return kept


def _cap_first(examples: list[Example], share: float, rng: random.Random) -> list[Example]:
    """Keep at most `share` of examples answering 1; the easy ones kept go to the labels with the
    fewest examples so far (water-filling), so dropping them does not unbalance the labels."""
    first = [e for e in examples if e.choice == 1]
    rest = [e for e in examples if e.choice != 1]
    if share >= 1 or not first or len(first) <= share * len(examples):
        return examples
    keep = max(int(share / (1 - share) * len(rest)), 0) if share > 0 else 0
    easy: dict[str, list[Example]] = defaultdict(list)
    for example in first:
        easy[example.gold_label].append(example)
    for label in easy:
        rng.shuffle(easy[label])
    totals = Counter(e.gold_label for e in rest)
    heap = [(totals[label], label) for label in sorted(easy)]
    heapq.heapify(heap)
    kept = []
    while heap and len(kept) < keep:
        total, label = heapq.heappop(heap)
        kept.append(easy[label].pop())
        if easy[label]:
            heapq.heappush(heap, (total + 1, label))
    return rest + kept


def _nones(by_kind: dict[str, list[Example]], n_in_scope: int, share: float, rng: random.Random) -> list[Example]:
    want = round(share / (1 - share) * n_in_scope) if share < 1 else n_in_scope
    oos = by_kind.get("out_of_scope", [])[:]
    others = by_kind.get("removed_true", []) + by_kind.get("not_retrieved", [])
    rng.shuffle(oos)
    rng.shuffle(others)
    return (oos + others)[:want]


def _cap(examples: list[Example], limit: int, rng: random.Random) -> list[Example]:
    if not limit or len(examples) <= limit:
        return examples
    examples = examples[:]
    rng.shuffle(examples)
    return examples[:limit]


def shorten_answers(source: Source, limit: int) -> Source:
    """Answers cut before anything is built, so every rationale cites only stored text."""
    if not limit:
        return source
    def cut(rows):
        return None if rows is None else [Row(r.text, r.label, " ".join(r.answer.split())[:limit]) for r in rows]
    return replace(source, tickets=cut(source.tickets), kb=cut(source.kb))


def source_examples(source: Source, opts: BuildOptions, embed: mining.Embed) -> dict[str, list[Example]]:
    source = shorten_answers(source, opts.max_answer_chars)
    texts = [r.text for r in source.tickets] + [r.text for r in source.kb or []] + source.out_of_scope
    texts += [t for pair in source.pairs for t in pair[:2]]
    vectors = mining.embed_unique(texts, embed)
    if source.pairs:
        return {s: _cap(v, _limit(opts, s), rng_for(opts.seed, source.name, s, "cap"))
                for s, v in pair_examples(source, opts, vectors).items()}
    dim = len(next(iter(vectors.values())))
    out: dict[str, list[Example]] = {}
    for data in _split_source(source, opts, vectors, dim):
        out[data.split] = _split_examples(data, opts)
    return out


def _limit(opts: BuildOptions, split: str) -> int:
    return opts.max_train_per_source if split == TRAIN else opts.max_validation_per_source


def _split_examples(data: SplitData, opts: BuildOptions) -> list[Example]:
    rng = rng_for(opts.seed, data.name, data.split, "balance")
    limit = _limit(opts, data.split)
    examples: list[Example] = []
    if prompt.LISTWISE in opts.formats:
        by_kind = listwise_examples(data, opts)
        if data.split == TRAIN:
            chosen = balance_listwise(by_kind, opts, rng)
        else:
            natural = by_kind.get("in_scope", []) + by_kind.get("not_retrieved", [])
            rest = {"out_of_scope": by_kind.get("out_of_scope", []), "removed_true": by_kind.get("removed_true", [])}
            chosen = natural + _nones(rest, len(natural), opts.none_share, rng)
        examples += _cap(chosen, limit, rng)
    if prompt.PAIRWISE in opts.formats:
        examples += _cap_pairs(pairwise_examples(data, opts), limit, rng)
    return examples


def _cap_pairs(examples: list[Example], limit: int, rng: random.Random) -> list[Example]:
    """Cap pairwise examples while keeping each positive with its negative (stays 1:1)."""
    couples = [examples[i : i + 2] for i in range(0, len(examples), 2)]
    return [e for couple in _cap(couples, limit // 2 if limit else 0, rng) for e in couple]


def texts_of(example: Example) -> set[str]:
    return {text_key(example.ticket)} | {text_key(c.question) for c in example.candidates}


def drop_leaks(train: list[Example], validation: list[Example]) -> tuple[list[Example], int]:
    seen = set().union(*(texts_of(e) for e in train)) if train else set()
    kept = [e for e in validation if not texts_of(e) & seen]
    return kept, len(validation) - len(kept)


def build(sources: Sequence[Source], opts: BuildOptions, embed: mining.Embed, embedder_name: str) -> BuildResult:
    train: list[Example] = []
    validation: list[Example] = []
    per_source = {}
    for source in sources:
        made = source_examples(source, opts, embed)
        train += made.get(TRAIN, [])
        validation += made.get(VALIDATION, [])
        per_source[source.name] = {
            "license": asdict(source.license),
            "counts": {split: _counts(made.get(split, [])) for split in (TRAIN, VALIDATION)},
        }
    validation, leaked = drop_leaks(train, validation)
    train = _dedupe_sorted(train)
    validation = _dedupe_sorted(validation)
    rng_for(opts.seed, "order", TRAIN).shuffle(train)
    rng_for(opts.seed, "order", VALIDATION).shuffle(validation)
    manifest = {
        "options": {**asdict(opts), "formats": list(opts.formats)},
        "embedder": embedder_name,
        "prompt_version_at_build": prompt.PROMPT_VERSION,
        "sources": per_source,
        "totals": {TRAIN: _counts(train), VALIDATION: _counts(validation)},
        "leak_check": {"validation_examples_dropped": leaked, "definition": LEAK_FREE},
    }
    return BuildResult(train, validation, manifest)


LEAK_FREE = (
    "every normalised text (ticket or candidate question) belongs to one split by a seeded hash; "
    "candidates come only from the ticket's own split; no validation example shares a text with "
    "any training example"
)


def _dedupe_sorted(examples: list[Example]) -> list[Example]:
    unique = {}
    for example in examples:
        unique.setdefault(example.id, example)
    return [unique[k] for k in sorted(unique)]


def _counts(examples: Sequence[Example]) -> dict:
    fmt = Counter(e.format for e in examples)
    kinds = Counter(e.kind for e in examples)
    choices = Counter(str(e.choice) for e in examples if e.format == prompt.LISTWISE)
    return {
        "examples": len(examples),
        "formats": dict(sorted(fmt.items())),
        "kinds": dict(sorted(kinds.items())),
        "listwise_choices": dict(sorted(choices.items())),
    }
