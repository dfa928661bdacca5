"""Page text out of PDF files (from the text layer, or by OCR for scanned pages), and removal of the running
headers and footers that pypdf leaves inline.

pypdf prints headers and footers ("Acme Store — Help Centre FAQ", "Page 3/10") in the middle of the text
stream, exactly where a page break cuts an answer in two; they must go before question/answer pairs can be
rejoined across pages.

A page is scanned when its text layer has almost no text (MIN_TEXT_CHARS) and it holds an image; such pages
are read by OCR (ingest/ocr.py), so scanned and mixed PDFs read like text PDFs, page numbers and all.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

from ingest.errors import IngestError
from ingest.ocr import ScannedPages
from ingest.progress import OCR, READING, ProgressFn

_EDGE_LINES = 3  # how deep into the top and bottom of a page a running line may sit
_CACHE_LIMIT = 2000  # pypdf objects kept before the cache is dropped (see _forget_pages)
_TAIL_BYTES = 32 * 1024  # where the final %%EOF must be; a truncated download loses it
MIN_TEXT_CHARS = 20  # a page whose text layer has fewer non-blank characters (and an image) is a scan
_READ_ERRORS = (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError)
_PAGE_NUMBER = re.compile(
    r"^(?:[-–—(\[]\s*)?(?:page|p\.|pg\.?)?\s*\d{1,5}(?:\s*(?:/|of)\s*\d{1,5})?(?:\s*[-–—)\]])?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PageText:
    """The text of one page; `number` is 1-based, as people cite pages.

    `ocr` says the page was scanned and read by OCR, with Tesseract's mean word `confidence` (0-100); its
    text is "" when OCR found nothing usable.
    """

    number: int
    text: str
    ocr: bool = False
    confidence: int | None = None


def iter_pages(path: str | Path, progress: ProgressFn | None = None) -> Iterator[PageText]:
    """Yield pages one at a time so that a 1,600-page manual or a 100-page scan never sits in memory at once.

    `progress(stage, done, total)` follows every page, with stage "ocr" for a scanned page, else "reading".
    Raises IngestError for an empty, non-PDF, encrypted or corrupt file, an image too large to decode, and
    a file in which neither the text layer nor OCR found text. That last case is only known at the end,
    after the (empty) pages were yielded.
    """
    path = Path(path)
    _check_bytes(path)
    found = scanned = 0
    # An open file rather than the path: given a path pypdf reads the whole file into memory (measured:
    # +172 MiB for a 145 MiB scan, +27 MiB from a file handle).
    with path.open("rb") as handle, closing(ScannedPages(path)) as scans:
        reader = _open(path, handle)
        total = len(reader.pages)
        for index in range(total):
            page = _read_page(path, reader, scans, index)
            found += bool(page.text.strip())
            scanned += page.ocr
            if progress:
                progress(OCR if page.ocr else READING, index + 1, total)
            yield page
    if not found:
        raise IngestError(path, _no_text_reason(scanned))


def read_pages(path: str | Path, progress: ProgressFn | None = None) -> list[PageText]:
    """All pages of a PDF as a list (see iter_pages for the errors)."""
    return list(iter_pages(path, progress))


def _read_page(path: Path, reader: PdfReader, scans: ScannedPages, index: int) -> PageText:
    try:
        text = reader.pages[index].extract_text() or ""
    except _READ_ERRORS as exc:
        raise IngestError(path, f"corrupt or unreadable PDF ({_short(exc)})") from exc
    if len("".join(text.split())) >= MIN_TEXT_CHARS:
        _forget_pages(reader)
        return PageText(index + 1, text)
    _forget_pages(reader, everything=True)  # pypdf cached this page's image stream while looking for text
    read = scans.read(index)
    if read is None:  # no image: a blank page, or drawings only
        return PageText(index + 1, text)
    return PageText(index + 1, read.text, ocr=True, confidence=read.confidence)


def _no_text_reason(scanned: int) -> str:
    if scanned:
        return (f"no usable text: no text layer, and OCR of {scanned} scanned page(s) found no readable text "
                "(blank pages, photos or an unreadable scan?)")
    return "no text layer and no scanned image: nothing to read (blank or drawing-only PDF?)"


def _open(path: Path, handle: BinaryIO) -> PdfReader:
    try:
        reader = PdfReader(handle)
        if reader.is_encrypted:
            _decrypt(path, reader)
        len(reader.pages)  # a broken page tree shows up here rather than halfway through
    except IngestError:
        raise
    except (FileNotDecryptedError, DependencyError) as exc:
        raise IngestError(path, f"encrypted PDF: cannot decrypt ({_short(exc)})") from exc
    except _READ_ERRORS as exc:
        raise IngestError(path, f"corrupt or unreadable PDF ({_short(exc)})") from exc
    return reader


def _check_bytes(path: Path) -> None:
    """Cheap checks on the raw bytes, which give clearer reasons than pypdf's own errors."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(1024)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except OSError as exc:
        raise IngestError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise IngestError(path, "empty file (0 bytes)")
    if not head.lstrip(b"\x00\t\n\r\f ").startswith(b"%PDF-"):
        raise IngestError(path, "not a PDF (the file does not start with %PDF-)")
    if b"%%EOF" not in tail:
        raise IngestError(path, "corrupt or unreadable PDF (truncated: no %%EOF marker at the end)")


def _decrypt(path: Path, reader: PdfReader) -> None:
    """Many PDFs are encrypted only against editing, with an empty password for reading: read those."""
    if not reader.decrypt(""):
        raise IngestError(path, "encrypted PDF: a password is required")


def _forget_pages(reader: PdfReader, everything: bool = False) -> None:
    """Drop pypdf's cached objects of pages already read, which otherwise grow with the file.

    pypdf keeps every object it resolves (page dictionaries, content streams) in `resolved_objects`, about
    8 KB a page, and a scanned page's whole image stream (1.5 MiB) once it was looked at: `everything`
    drops the cache now. Clearing is safe because it is only a cache: objects are re-read on demand.
    """
    cache = getattr(reader, "resolved_objects", None)
    if isinstance(cache, dict) and (everything or len(cache) > _CACHE_LIMIT):
        cache.clear()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def strip_running_lines(pages: list[PageText]) -> list[PageText]:
    """Remove headers and footers that repeat on many pages, and lone page-number lines at page edges.

    A line is "running" when, with its digits masked ("Page 3/10" ≈ "Page #/#"), it sits among the top or
    bottom lines of at least half the pages (of both pages for a 2-page file). Only lines at the edges of a
    page are removed, so a body line that happens to read like a header survives.
    """
    running = _running_keys(pages)
    return [replace(page, text="\n".join(_peel(page.text.splitlines(), running))) for page in pages]


def _running_keys(pages: list[PageText]) -> set[str]:
    if len(pages) < 2:
        return set()
    counts: Counter[str] = Counter()
    for page in pages:
        lines = [line for line in page.text.splitlines() if line.strip()]
        counts.update({_key(line) for line in lines[:_EDGE_LINES] + lines[-_EDGE_LINES:]})
    needed = len(pages) if len(pages) == 2 else (len(pages) + 1) // 2
    return {key for key, count in counts.items() if count >= needed and key}


def _peel(lines: list[str], running: set[str]) -> list[str]:
    def removable(line: str) -> bool:
        return not line.strip() or _key(line) in running or _is_page_number(line)

    start, end = 0, len(lines)
    while start < end and start < _EDGE_LINES * 2 and removable(lines[start]):
        start += 1
    while end > start and len(lines) - end < _EDGE_LINES * 2 and removable(lines[end - 1]):
        end -= 1
    return lines[start:end]


def _key(line: str) -> str:
    return re.sub(r"\d+", "#", " ".join(line.split()).lower())


def _is_page_number(line: str) -> bool:
    return bool(_PAGE_NUMBER.match(line.strip()))
