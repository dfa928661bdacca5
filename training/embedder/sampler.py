"""Batches for MultipleNegativesRankingLoss in which no in-batch negative shares the anchor's label.

MNRL treats every other row's positive and hard negative as a negative for each anchor. Two
anchors of one label in a batch (or an anchor whose label is another row's hard negative) would
teach the model to push apart texts that mean the same thing. sentence-transformers'
NO_DUPLICATES sampler keeps *texts* unique per batch but ignores labels (and GROUP_BY_LABEL does
the opposite: it puts same-label rows together, for triplet losses). This sampler is
NO_DUPLICATES with each row's labels added to the values it compares: a row joins a batch only
when its anchor label is neither an anchor nor a hard-negative label there, and its hard
negative's label is no anchor label there.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

from training.embedder.pairs import Triplet


def row_values(triplet: Triplet) -> frozenset:
    values = {("text", triplet.anchor), ("text", triplet.positive), ("anchor", triplet.label)}
    if triplet.negative is not None:
        values.add(("text", triplet.negative))
    if triplet.negative_label is not None:
        values.add(("negative", triplet.negative_label))
    return frozenset(values)


def conflicts(values: frozenset, batch: set) -> bool:
    for kind, value in values:
        if kind == "text" and ("text", value) in batch:
            return True
        if kind == "anchor" and (("anchor", value) in batch or ("negative", value) in batch):
            return True
        if kind == "negative" and ("anchor", value) in batch:
            return True
    return False


class NoSharedLabelBatchSampler(NoDuplicatesBatchSampler):
    """NoDuplicatesBatchSampler whose duplicate test also covers labels (see the module doc).

    Rows that cannot join a batch are deferred to a later one, as in the parent; the last batches
    of an epoch can be small when a few labels dominate."""

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None,
                 generator=None, seed: int = 0, *, triplets: dict[tuple[str, str], Triplet]):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        # rows are found by their texts: the trainer hands over each knowledge base's dataset
        # (possibly with columns added), not the list the triplets came in
        self.values = [row_values(triplets[pair]) for pair in zip(dataset["anchor"], dataset["positive"])]
        self._length: int | None = None

    def _iter_one_pass(self, get_sample_values, has_overlap):
        # the parent's shuffle-and-defer loop, with our values and our conflict test
        return super()._iter_one_pass(self.values.__getitem__, conflicts)

    def __len__(self) -> int:
        """The batches one pass really yields. The parent's estimate (rows / batch_size) is too
        low when few labels force small batches, and the trainer would end each epoch early,
        before it saw every row."""
        if self._length is None:
            if self.generator is not None and self.seed is not None:
                self.generator.manual_seed(self.seed + self.epoch)  # as __iter__ does, which re-seeds
            self._length = sum(1 for _ in self._iter_one_pass(None, None))
        return self._length


def no_shared_label_sampler(triplets: Sequence[Triplet]):
    """What SentenceTransformerTrainingArguments(batch_sampler=…) takes: a callable building the
    sampler for a training dataset whose rows are (some of) these triplets."""
    return partial(NoSharedLabelBatchSampler, triplets={(t.anchor, t.positive): t for t in triplets})
