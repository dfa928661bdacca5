"""The chunks' schema: what one searchable unit holds, how it is stored as Chroma metadata and read
back as a candidate, and the document record built from a file's chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from retriever.candidates import Candidate
from retriever.registry import DocumentRecord

FAQ, PASSAGE, ROW = "faq", "passage", "row"


@dataclass(frozen=True)
class ChunkRecord:
    """One searchable unit. For passages, `question` holds the passage text that is searched.

    `page` cites PDFs; `section` (the heading path, "Returns › Refund times") cites DOCX, HTML and Markdown.
    """

    kind: str
    question: str
    answer: str
    page: int | None = None
    label: str | None = None
    row_id: str | None = None
    section: str | None = None


def chunk_metadata(doc: DocumentRecord, chunk: ChunkRecord) -> dict:
    # Chroma metadata cannot hold None: absent values are left out.
    meta = {"doc_id": doc.id, "source": doc.name, "kind": chunk.kind, "question": chunk.question,
            "answer": chunk.answer}
    optional = {"page": chunk.page, "label": chunk.label, "row_id": chunk.row_id, "section": chunk.section}
    meta.update({k: v for k, v in optional.items() if v is not None})
    return meta


def candidate_from_metadata(chunk_id: str, meta: dict, score: float) -> Candidate:
    return Candidate(
        id=meta.get("row_id") or chunk_id,
        question=meta["question"],
        answer=meta["answer"],
        label=meta.get("label"),
        source=meta["source"],
        page=meta.get("page"),
        score=float(score),
        section=meta.get("section"),
    )


def new_document(
    name: str, sha256: str, pages: int, chunks: Sequence[ChunkRecord], ocr_pages: Sequence[int] = ()
) -> DocumentRecord:
    kinds = [c.kind for c in chunks]
    return DocumentRecord(
        id=sha256[:16], name=name, sha256=sha256, pages=pages, chunks=len(chunks),
        faq_pairs=kinds.count(FAQ), passages=kinds.count(PASSAGE), rows=kinds.count(ROW),
        added_at=time.time(), ocr_pages=page_ranges(ocr_pages),
    )


def page_ranges(numbers: Sequence[int]) -> str:
    """ "2-5, 7" for pages 2, 3, 4, 5 and 7: short enough for a table cell even on a 500-page scan."""
    spans: list[list[int]] = []
    for number in sorted(set(numbers)):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


__all__ = ["FAQ", "PASSAGE", "ROW", "ChunkRecord", "candidate_from_metadata", "chunk_metadata", "new_document",
           "page_ranges"]
