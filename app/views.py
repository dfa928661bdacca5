"""What an agent is shown of an answer: one view model that the page, the command line and the API render.

Pure data (no HTML, no terminal codes): each interface formats the same facts in its own way, so
they cannot disagree about what an answer says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.feedback import NONE_ID
from reasoner.verdict import Verdict


def percent(x: float) -> str:
    return f"{100 * x:.0f}%"


def where(source: str, page: int | None, section: str | None = None) -> str:
    """A citation: the file, and the page (PDFs) or the section (DOCX, HTML, Markdown) when there is one."""
    if page:
        return f"{source}, page {page}"
    return f"{source}, section {section}" if section else source


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@dataclass(frozen=True)
class CandidateRow:
    """One candidate as the page's table shows it: every stage's score, then the mix."""

    HEADERS = ("#", "question", "similarity", "rank score", "reranker", "judge", "combined", "source", "id")

    number: int
    question: str
    similarity: float
    """Cosine similarity of the closest row (what the floor compares)."""
    rank: float
    """What ranked it: the label vote, or with a reranker the fused score on the vote's scale."""
    reranker: float | None
    """The reranker's calibrated probability; None where no reranker ran."""
    judge: float
    """The judge's probability (0 where the judge was not asked)."""
    combined: float
    source: str
    """The citation (file, and page or section)."""
    id: str

    def cells(self) -> list:
        """The row under HEADERS."""
        return [self.number, self.question, _score(self.similarity), _score(self.rank), _score(self.reranker),
                _score(self.judge), _score(self.combined), self.source, self.id]

    @classmethod
    def of(cls, scored) -> "CandidateRow":
        """From a ScoredCandidate (reasoner.verdict)."""
        c = scored.candidate
        return cls(scored.number, c.question, c.score, c.label_score, c.rerank_score, scored.judge_probability,
                   scored.combined, where(c.source, c.page, c.section), c.id)


@dataclass(frozen=True)
class AnswerView:
    escalate: bool
    confidence: str
    """"87%": of the match, or of "no match" when escalating."""
    resolution: str
    """The matched answer text ("" when escalating): what the agent copies into the reply."""
    question: str
    """The matched FAQ's question, or (escalating) the closest entry's."""
    source: str
    """Citation of the match, or of the closest entry."""
    similarity: float | None
    label: str | None
    reasoning: str
    latency_s: float
    notes: list[str] = field(default_factory=list)
    candidates: list[CandidateRow] = field(default_factory=list)
    choices: list[tuple[str, str]] = field(default_factory=list)
    """(shown text, id) of the entries an agent may name as the right one; the last is "none"."""
    answer_id: str | None = None
    model: str = ""

    @property
    def headline(self) -> str:
        return "No match — escalate" if self.escalate else f"Match · {self.confidence} confidence"

    @classmethod
    def of(cls, verdict: Verdict, retrieved=None, answer_id: str | None = None) -> "AnswerView":
        """From a Verdict (or the service's Answer, which carries `retrieved` and `answer_id`)."""
        retrieved = retrieved if retrieved is not None else getattr(verdict, "retrieved", [])
        answer_id = answer_id if answer_id is not None else getattr(verdict, "answer_id", None)
        shown = verdict.match or (verdict.candidates[0].candidate if verdict.candidates else None)
        return cls(
            escalate=verdict.escalate,
            confidence=percent(verdict.confidence),
            resolution="" if verdict.escalate or verdict.match is None else verdict.match.answer,
            question=shown.question if shown else "",
            source=where(shown.source, shown.page, shown.section) if shown else "",
            similarity=shown.score if shown else None,
            label=verdict.match.label if verdict.match else None,
            reasoning=verdict.reasoning,
            latency_s=verdict.latency_s,
            notes=list(verdict.notes),
            candidates=[CandidateRow.of(s) for s in verdict.candidates],
            choices=[(f"{c.id} — {c.question[:90]}", c.id) for c in retrieved]
            + [("none — nothing matches: escalate", NONE_ID)],
            answer_id=answer_id,
            model=verdict.model,
        )


__all__ = ["AnswerView", "CandidateRow", "percent", "where"]
