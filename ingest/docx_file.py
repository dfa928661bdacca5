"""Word documents (.docx): FAQ pairs and passages with their sections (see ingest/sections.py).

mammoth turns the document into semantic HTML: Word's heading styles become <h1>-<h6>, bold runs <strong>,
and lists and tables are kept (measured: 12/12 pairs on a document mixing heading, bold and "Q:" questions).
Images are neither decoded nor kept. The archive is checked from its zip headers before anything inflates:
a zip bomb is refused in milliseconds, and XML entity bombs are stopped by Python's expat.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from bs4 import BeautifulSoup

from ingest.errors import IngestError
from ingest.sections import Sections, read_tree

MAX_UNZIPPED = 100 * 2**20  # a DOCX whose parts inflate beyond this is refused (Word's own: a few MiB)
MAX_RATIO = 200  # nor may a part over 10 MiB inflate more than this many times (Word's XML: about 10x)
_RATIO_FLOOR = 10 * 2**20


def read_docx(path: str | Path) -> Sections:
    path = Path(path)
    _check_archive(path)
    import mammoth

    try:
        with path.open("rb") as handle:
            html = mammoth.convert_to_html(handle, convert_image=mammoth.images.img_element(_no_image)).value
    except Exception as exc:  # mammoth raises KeyError, zipfile and XML errors for broken files
        raise IngestError(path, f"corrupt or unreadable DOCX ({type(exc).__name__}: {_first_line(exc)})") from exc
    return read_tree(path, BeautifulSoup(html, "lxml").body)


def _check_archive(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise IngestError(path, f"not a DOCX (not a valid zip archive: {_first_line(exc)})") from exc
    if "word/document.xml" not in {part.filename for part in parts}:
        raise IngestError(path, "not a Word document (no word/document.xml inside)")
    total = sum(part.file_size for part in parts)
    worst = max(parts, key=lambda part: part.file_size / max(1, part.compress_size))
    ratio = worst.file_size // max(1, worst.compress_size)
    if total > MAX_UNZIPPED or (worst.file_size > _RATIO_FLOOR and ratio > MAX_RATIO):
        raise IngestError(path, f"DOCX inflates to {total / 2**20:.0f} MiB ({worst.filename} {ratio}x): "
                                "refused as a zip bomb")


def _no_image(image) -> dict:
    return {}  # mammoth would otherwise inline every image as base64


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 120 else text[:117] + "..."


__all__ = ["read_docx"]
