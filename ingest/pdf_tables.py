"""Rows of the tables in PDFs (fee schedules, limits) as passages that carry their column headings.

"Service: Cheque book (25 leaves) — Charge: Rs 100 + GST — Notes: First book each year free", cited by its
page, so that "how much does a cheque book cost" finds the row rather than a page of numbers (measured on a
fee schedule: hit@3 8/10 → 10/10 questions with the rows as passages).

img2table finds the tables (ruled, one rule under the headings, or zebra fills) on a 200-dpi render of the
page with OpenCV, and fills the cells from the PDF's text layer, or by OCR on scanned pages (the Tesseract
engine of ingest/ocr.py, in process). It was the only extractor tried that got every row and heading of all
three table styles with no spurious row. It costs 0.3-0.5 CPU s a page, so it only runs on pages that can
hold a table: scanned pages, and pages with drawn lines or fills other than those repeated on most pages
(a rule under the running header); a plain text manual pays nothing. Pages
are handed to it one at a time, as one-page PDFs: it keeps every page it renders as an RGB array.

A table at the top of the next page with as many columns as the previous table, under at most the running
header, continues it: it borrows the previous headings (and drops them if they are repeated).
"""

from __future__ import annotations

import io
import re
import warnings
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from ingest.errors import IngestError
from ingest.ocr import MAX_IMAGE_PIXELS, MAX_RENDER_PIXELS, Tesseract, open_pdfium
from ingest.progress import TABLES, ProgressFn

RENDER_SCALE = 200 / 72  # img2table renders every page at 200 dpi; it cannot be told otherwise
MAX_PATHS = 500  # path objects looked at per page to find its drawings
RUNNING_LINES = 1  # a table under no more text lines than this (a running header) may continue the last one
_CAPTION = re.compile(r"^[A-Z][^.!?;:]{2,60}$")  # a short heading-like title, not a sentence


@dataclass(frozen=True)
class TableRow:
    """One body row as text, "Heading: cell — Heading: cell", on page `page` (1-based)."""

    page: int
    text: str


@dataclass
class _Table:
    page: int
    lines_above: int  # text lines between the top of the page and the table
    caption: str
    rows: list[list[str]]


def table_rows(path: str | Path, scanned: Collection[int] = (), progress: ProgressFn | None = None
               ) -> list[TableRow]:
    """Rows of every table of the PDF; `scanned` are the pages read by OCR (their cells are OCR'd too)."""
    path = Path(path)
    pages = _candidate_pages(path, set(scanned))
    tables: list[_Table] = []
    with closing(Tesseract(path, sparse=True)) as engine:
        for done, number in enumerate(pages, start=1):
            tables += _page_tables(path, number, number in scanned, engine)
            if progress:
                progress(TABLES, done, len(pages))
    return list(_rows(tables))


def _candidate_pages(path: Path, scanned: set[int]) -> list[int]:
    """Scanned pages, and pages with drawn lines or fills other than the running decorations (a rule under
    the header on every page would otherwise send a 1,600-page manual through table detection)."""
    drawings: list[set[tuple[int, ...]] | None] = []  # per page: boxes of its lines and fills; None: too large
    with closing(open_pdfium(path)) as document:
        for index in range(len(document)):
            with closing(document[index]) as page:
                drawings.append(_drawing_boxes(page) if _renderable(page) else None)
    running = _running_boxes([boxes for boxes in drawings if boxes is not None])
    return [number for number, boxes in enumerate(drawings, start=1)
            if boxes is not None and (number in scanned or boxes - running)]


def _renderable(page: pdfium.PdfPage) -> bool:
    """False for a page too large to render safely (measured: a 116x165-inch page at 200 dpi, 770 MP, got the
    extractor killed for memory) or holding an image too large to decode."""
    width, height = page.get_size()
    if width * height * RENDER_SCALE**2 > MAX_RENDER_PIXELS:
        return False
    images = page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE])
    return all(w * h <= MAX_IMAGE_PIXELS for w, h in (image.get_px_size() for image in images))


def _drawing_boxes(page: pdfium.PdfPage) -> set[tuple[int, ...]]:
    """Bounding boxes (whole points) of the page's path objects; a few hundred are enough to decide."""
    paths = islice(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH]), MAX_PATHS)
    return {tuple(round(value) for value in path.get_bounds()) for path in paths}


def _running_boxes(pages: list[set[tuple[int, ...]]]) -> set[tuple[int, ...]]:
    """Boxes drawn at the same place on at least half the pages (of at least 3): headers, footers, frames."""
    if len(pages) < 3:
        return set()
    counts = Counter(box for boxes in pages for box in boxes)
    return {box for box, count in counts.items() if count >= (len(pages) + 1) // 2}


def _page_tables(path: Path, number: int, scanned: bool, engine: Tesseract) -> list[_Table]:
    from img2table.document import PDF

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OpenCV and img2table warn about empty regions
            document = PDF(_one_page(path, number), pdf_text_extraction=not scanned)
            found = document.extract_tables(ocr=_cell_reader(engine) if scanned else None,
                                            borderless_tables=True).get(0, [])
            height = document.images[0].shape[0]
    except IngestError:
        raise
    except Exception as exc:  # img2table and OpenCV raise many types; what is wrong is this file's page
        raise IngestError(path, f"page {number}: table extraction failed ({type(exc).__name__}: {exc})") from exc
    tops = [table.bbox.y1 / height for table in found]
    above = [0] * len(found) if scanned else _lines_above(path, number, tops)
    return [_Table(number, lines, _caption(table.title), [[_clean(cell.value) for cell in row]
                                                          for row in table.content.values()])
            for table, lines in zip(found, above)]


def _one_page(path: Path, number: int) -> bytes:
    """Page `number` alone as a PDF: img2table wants the file's bytes, and a scan's are 150 MB."""
    with closing(open_pdfium(path)) as source, closing(pdfium.PdfDocument.new()) as single:
        single.import_pages(source, [number - 1])
        buffer = io.BytesIO()
        single.save(buffer)
    return buffer.getvalue()


def _cell_reader(engine: Tesseract):
    """img2table's Tesseract reader with our in-process engine instead of its `tesseract` command (which
    starts a process per page and, from Debian, spins OpenMP threads: 4x the CPU, measured)."""
    from img2table.ocr import TesseractOCR

    class _InProcess(TesseractOCR):
        def __init__(self) -> None:  # the parent checks for the command line; nothing to check here
            self.n_threads, self.lang, self.psm, self.env = 1, engine.lang, 11, {}

        def hocr(self, image: np.ndarray) -> str:
            return engine.hocr(Image.fromarray(image))

    return _InProcess()


def _lines_above(path: Path, number: int, tops: list[float]) -> list[int]:
    """Text lines above each table top (a fraction of the page height, from the top)."""
    with closing(open_pdfium(path)) as document, closing(document[number - 1]) as page:
        width, height = page.get_size()
        with closing(page.get_textpage()) as text:
            bands = [text.get_text_bounded(0, height * (1 - top) + 2, width, height) for top in tops]
    return [sum(1 for line in band.splitlines() if line.strip()) for band in bands]


def _rows(tables: list[_Table]) -> Iterator[TableRow]:
    """The body rows of each table under its headings (the previous table's, when it continues it)."""
    previous: _Table | None = None
    header: list[str] = []
    for table in tables:
        rows = [row for row in table.rows if any(row)]
        if len(rows) > 2 and len(rows[0]) > 1 and sum(map(bool, rows[0])) == 1:  # a title spanning the table
            table.caption, rows = table.caption or next(filter(None, rows[0])), rows[1:]
        if not rows:
            continue
        if previous is not None and _continues(previous, table, header, rows):
            table.caption = previous.caption
            body = rows[1:] if rows[0] == header else rows
        else:
            header, body = rows[0], rows[1:]
        for row in body:
            yield TableRow(table.page, _row_text(table.caption, header, row))
        previous = table


def _continues(previous: _Table, table: _Table, header: list[str], rows: list[list[str]]) -> bool:
    return (previous.page == table.page - 1 and table.lines_above <= RUNNING_LINES
            and len(header) == len(rows[0]))


def _row_text(caption: str, header: list[str], row: list[str]) -> str:
    cells = [f"{name}: {value}" if name else value for name, value in zip(header, row) if value]
    return " — ".join(([caption] if caption else []) + cells)


def _caption(title: str | None) -> str:
    title = _clean(title)
    return title if _CAPTION.match(title) else ""


def _clean(value: object) -> str:
    return " ".join(str(value).split()) if value is not None else ""


__all__ = ["TableRow", "table_rows"]
