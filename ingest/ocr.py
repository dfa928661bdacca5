"""Text of scanned PDF pages: each page rendered by pdfium and read by Tesseract in process (tesserocr).

Settings come from measurements on generated scans (bold 9-11 pt FAQ text, 114 pairs on six scans, 2 cores):
- 200 dpi: 99% of questions exact, 0.74 CPU s an A4 page. At 300 dpi bold text reads worse (93%) and
  costs 1.3x; at 150 dpi answers of rough scans degrade. The page's own image resolution does not matter.
- Tesseract reads the bold capital "I" of "How do I" as "|" (59% of questions exact): "|" is banned from
  its character set; at times it reads it as "!" before a lower-case word, which is put back.
- tesserocr (Tesseract's C API) rather than the `tesseract` command: one model load per file instead of
  one process, temporary PNG and model load per page (7x the CPU under load), and the confidence comes
  with the text.

Memory stays flat with the page count: pdfium keeps every image stream it has decoded while a document is
open (about 2 MiB a scanned page), so the document is opened again for each scanned page (milliseconds).
Images are sized from their dictionaries before anything is decoded: a 40000x40000 image in a 1.5 MB file
is refused unread, and a huge page is rendered at a lower dpi rather than into gigabytes.

Tesseract's language data comes from Debian's `tesseract-ocr` package (the tesserocr wheel brings the
library, not the data).
"""

from __future__ import annotations

import math
import re
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from ingest.errors import IngestError

OCR_DPI = 200
LANGUAGE = "eng"
MIN_CONFIDENCE = 50  # mean word confidence (0-100) under which a page's OCR text is noise, not text
MIN_WORDS = 3  # fewer real words than this is no usable text either (a stamp, a logo, speckles)
MAX_IMAGE_PIXELS = 200_000_000  # an embedded image larger than this is refused unread (A0 at 300 dpi: 140 MP)
MAX_RENDER_PIXELS = 25_000_000  # a page larger than this at OCR_DPI is rendered at a lower dpi (A3 at 300: 17 MP)
TESSDATA_DIRS = (  # where Debian's tesseract-ocr 5 and 4, and a source build, put the language data
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)
_WORD = re.compile(r"[^\W\d_]{2,}")
_BANG_I = re.compile(r"(?<=\w)! (?=[a-z])")  # "How do! block": a bold capital I read as "!" before a word


@dataclass(frozen=True)
class OcrText:
    """What OCR made of one page: `text` is "" when it was not usable (see MIN_CONFIDENCE, MIN_WORDS)."""

    text: str
    confidence: int


def tessdata_dir(lang: str = LANGUAGE) -> Path | None:
    """The folder holding `<lang>.traineddata`, or None when Tesseract's data is not installed."""
    for folder in map(Path, TESSDATA_DIRS):
        if (folder / f"{lang}.traineddata").is_file():
            return folder
    return None


class Tesseract:
    """One Tesseract engine, started on first use (text PDFs never pay for the model load); close() it.

    `sparse=True` reads scattered words (table cells) instead of running text.
    """

    def __init__(self, path: Path, lang: str = LANGUAGE, sparse: bool = False):
        self.path, self.lang, self.sparse = path, lang, sparse
        self._api = None

    def read(self, image: Image.Image) -> OcrText:
        api = self._started()
        api.SetImage(image)
        text, confidence = api.GetUTF8Text(), api.MeanTextConf()
        api.Clear()
        text = _BANG_I.sub(" I ", text)
        usable = confidence >= MIN_CONFIDENCE and len(_WORD.findall(text)) >= MIN_WORDS
        return OcrText(text if usable else "", confidence)

    def hocr(self, image: Image.Image) -> str:
        """Words with their boxes and confidences, as hOCR (what img2table reads table cells from)."""
        api = self._started()
        api.SetImage(image)
        html = api.GetHOCRText(0)
        api.Clear()
        return html

    def _started(self):
        if self._api is None:
            import tesserocr

            folder = tessdata_dir(self.lang)
            if folder is None:
                raise IngestError(self.path, f"cannot read scanned pages: Tesseract's '{self.lang}' language "
                                             "data is not installed (apt-get install tesseract-ocr)")
            mode = tesserocr.PSM.SPARSE_TEXT if self.sparse else tesserocr.PSM.AUTO
            self._api = tesserocr.PyTessBaseAPI(path=f"{folder}/", lang=self.lang, psm=mode)
            self._api.SetVariable("tessedit_char_blacklist", "|")  # bold capital I is read as "|" otherwise
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.End()
            self._api = None


class ScannedPages:
    """Reads the scanned pages of one PDF, one page image in memory at a time; close() it."""

    def __init__(self, path: Path, dpi: int = OCR_DPI, lang: str = LANGUAGE):
        self.path, self.dpi = path, dpi
        self.engine = Tesseract(path, lang)

    def read(self, index: int) -> OcrText | None:
        """OCR of page `index` (0-based), or None when the page holds no image (blank or drawings only)."""
        try:
            with closing(open_pdfium(self.path)) as document, closing(document[index]) as page:
                sizes = image_sizes(page)
                if not sizes:
                    return None
                check_images(self.path, index + 1, sizes)
                image = render(page, self.dpi)
        except pdfium.PdfiumError as exc:
            raise IngestError(self.path, f"page {index + 1}: cannot render the scanned page ({exc})") from exc
        return self.engine.read(image)

    def close(self) -> None:
        self.engine.close()


def open_pdfium(path: Path) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(str(path), password="")
    except pdfium.PdfiumError as exc:
        raise IngestError(path, f"corrupt or unreadable PDF (pdfium: {exc})") from exc


def image_sizes(page: pdfium.PdfPage) -> list[tuple[int, int]]:
    """Pixel sizes of the page's images, read from their dictionaries (nothing is decoded)."""
    return [obj.get_px_size() for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE])]


def check_images(path: Path, number: int, sizes: list[tuple[int, int]]) -> None:
    """Refuse a decompression bomb (a few MB that inflate to gigabytes) before anything decodes it."""
    for width, height in sizes:
        if width * height > MAX_IMAGE_PIXELS:
            raise IngestError(path, f"page {number}: image of {width}×{height} pixels is too large to "
                                    f"decode (limit {MAX_IMAGE_PIXELS // 1_000_000} megapixels)")


def render(page: pdfium.PdfPage, dpi: int) -> Image.Image:
    """The page in grey at `dpi`, or at the dpi that keeps it under MAX_RENDER_PIXELS."""
    width, height = page.get_size()  # points
    scale = min(dpi / 72, math.sqrt(MAX_RENDER_PIXELS / max(1.0, width * height)))
    bitmap = page.render(scale=scale, grayscale=True)
    try:
        return bitmap.to_pil().copy()  # the copy owns its pixels, so the bitmap can go now
    finally:
        bitmap.close()


__all__ = ["OCR_DPI", "OcrText", "ScannedPages", "Tesseract", "check_images", "image_sizes", "open_pdfium",
           "render", "tessdata_dir"]
