"""One file → the chunks the store keeps, for each supported type (ingest/formats.py lists which is which).

PDF: pages (OCR'd where scanned), FAQ pairs and passages cited by page, plus a passage per table row.
CSV / JSONL: one row chunk per line. DOCX, HTML, Markdown: pairs and passages cited by section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ingest.faq import split_faq
from ingest.pdf import read_pages, strip_running_lines
from ingest.progress import ProgressFn
from ingest.sections import Sections
from ingest.tables import read_rows
from retriever.chunks import FAQ, PASSAGE, ROW, ChunkRecord


@dataclass(frozen=True)
class Extracted:
    """What a reader made of one file."""

    chunks: list[ChunkRecord]
    pages: int = 0
    ocr_pages: tuple[int, ...] = ()
    """Pages read by OCR."""


Reader = Callable[[Path, "ProgressFn | None"], Extracted]


def read_pdf(path: Path, progress: ProgressFn | None = None) -> Extracted:
    from ingest.pdf_tables import table_rows  # OpenCV: loaded only once a PDF is read

    pages = read_pages(path, progress)
    scanned = tuple(page.number for page in pages if page.ocr)
    pairs, passages = split_faq(strip_running_lines(pages))
    chunks = [ChunkRecord(FAQ, p.question, p.answer, p.page) for p in pairs]
    chunks += [ChunkRecord(PASSAGE, p.text, p.text, p.page) for p in passages]
    chunks += [ChunkRecord(PASSAGE, r.text, r.text, r.page) for r in table_rows(path, scanned, progress)]
    return Extracted(chunks, len(pages), scanned)


def read_rows_file(path: Path, progress: ProgressFn | None = None) -> Extracted:
    return Extracted([ChunkRecord(ROW, r.question, r.answer, None, r.label, r.id) for r in read_rows(path)])


def read_docx_file(path: Path, progress: ProgressFn | None = None) -> Extracted:
    from ingest.docx_file import read_docx

    return _sectioned(read_docx(path))


def read_html_file(path: Path, progress: ProgressFn | None = None) -> Extracted:
    from ingest.html_file import read_html

    return _sectioned(read_html(path))


def read_markdown_file(path: Path, progress: ProgressFn | None = None) -> Extracted:
    from ingest.markdown_file import read_markdown

    return _sectioned(read_markdown(path))


def _sectioned(found: Sections) -> Extracted:
    chunks = [ChunkRecord(FAQ, p.question, p.answer, section=p.section or None) for p in found.pairs]
    chunks += [ChunkRecord(PASSAGE, p.text, p.text, section=p.section or None) for p in found.passages]
    return Extracted(chunks)


__all__ = ["Extracted", "Reader", "read_docx_file", "read_html_file", "read_markdown_file", "read_pdf",
           "read_rows_file"]
