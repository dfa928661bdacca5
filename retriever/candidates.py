"""What the retriever hands to the reasoner: one candidate FAQ per distinct resolution.

Kept free of Chroma and model imports so the reasoner and training can use it cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Candidate:
    """A knowledge-base entry that might answer a ticket.

    `score` is the cosine similarity of the ticket to the entry's question (0..1 for
    all-MiniLM), what the similarity floor is calibrated on; `rank_score` decided the order: the
    resolution's label vote (retriever/hybrid.py), or where a cross-encoder reranked the list
    (retriever/reranker.py) the fused score on the vote's scale; None where nothing voted.
    `rerank_score` is the reranker's calibrated probability.
    """

    id: str
    question: str
    answer: str
    label: str | None
    source: str
    page: int | None
    score: float
    rank_score: float | None = None
    section: str | None = None
    """Heading path in the source ("Returns › Refund times") for DOCX, HTML and Markdown entries."""
    rerank_score: float | None = None
    """The reranker's calibrated probability (0..1) that this is the ticket's resolution; the
    order then follows it. None where no reranker ran."""

    @property
    def label_score(self) -> float:
        """What ranks the resolution and what the judge's mix weighs: `rank_score`, else its similarity."""
        return self.score if self.rank_score is None else self.rank_score

    @property
    def resolution_key(self) -> str:
        """Rows that share a label share one resolution; otherwise the question is the key."""
        return self.label if self.label else self.question.strip().lower()

    def to_dict(self) -> dict:
        return asdict(self)

    def citation(self) -> "Citation":
        return Citation(self.id, self.question, self.answer, self.label, self.source, self.page, self.section)


@dataclass(frozen=True)
class Citation:
    """What an answer shows of its match: the `match` object of `ask --json` and of the REST API."""

    id: str
    question: str
    answer: str
    """The resolution text."""
    label: str | None
    source: str
    """File the entry came from."""
    page: int | None
    """Page in the source document (None for CSV/JSONL rows and for DOCX, HTML and Markdown)."""
    section: str | None = None
    """Heading path in a DOCX, HTML or Markdown source, "Returns › Refund times" (None elsewhere)."""
