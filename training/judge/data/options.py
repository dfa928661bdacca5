"""What a judge-data build does: the knobs of training/judge/data/build.py, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from reasoner import prompt
from retriever.hybrid import RetrieverConfig


@dataclass(frozen=True)
class BuildOptions:
    seed: int = 13
    """Seeds the split hash and every sampling choice."""
    top_k: int = 5
    """Candidates per listwise example (the judge's default top-k)."""
    validation_share: float = 0.1
    """Share of texts (hence tickets and knowledge-base rows) that go to validation."""
    none_share: float = 0.25
    """Share of listwise examples whose right answer is 0, "none of these"."""
    removed_true_rate: float = 0.35
    """Share of in-scope tickets searched again with their own label withheld (answer 0)."""
    max_first_share: float = 0.8
    """Training only: at most this share of in-scope listwise examples answer 1."""
    pair_rate: float = 0.5
    """Share of in-scope tickets that give a positive and a negative pairwise example."""
    random_negative_share: float = 0.2
    """Share of pairwise negatives drawn at random instead of the retriever's nearest other label."""
    max_train_per_source: int = 0
    """Cap on training examples per source and format after balancing; 0 = no cap."""
    max_validation_per_source: int = 0
    """Cap on validation examples per source and format; 0 = no cap."""
    formats: tuple[str, ...] = (prompt.LISTWISE, prompt.PAIRWISE)
    """Which example formats to build."""
    max_answer_chars: int = 0
    """Store candidate answers flattened to one line and cut to this many characters (the prompt
    shows at most reasoner.prompt.MAX_ANSWER_CHARS anyway); 0 = store them whole."""
    label_votes: int = RetrieverConfig.label_votes
    """Candidates are ranked as the product's retriever ranks them: a label by the mean similarity
    of its best this-many rows (retriever/hybrid.py); 1 = its best row alone (builds before 2026-12)."""


__all__ = ["BuildOptions"]
