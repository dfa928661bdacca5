"""Scanned, mixed and hostile PDFs, and a fee schedule with tables, built on the fly for tests and benchmarks.

A "scan" is a text PDF rendered by pypdfium2, degraded as a desk scanner does (a slight rotation, grey paper,
sensor noise, JPEG) with a seeded generator, and wrapped back into an image-only PDF by Pillow at the original
page size. Nothing is read from ../shared or downloaded. Import it by path, as pdf_fixtures:
`sys.path.insert(0, "data"); import scan_fixtures`. Needs fpdf2 (a dev dependency), pypdf, pypdfium2, Pillow.
"""

from __future__ import annotations

import io
import random
import zlib
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
from fpdf import FPDF
from PIL import Image
from pypdf import PdfReader, PdfWriter

from pdf_fixtures import A5, _FIXED_DATE

FEES_HEADER = ("Service", "Charge", "Notes")
FEES = [
    ("Cheque book (25 leaves)", "Rs 100 + GST", "First book each year free"),
    ("Stop payment of a cheque", "Rs 100 + GST", "Per cheque"),
    ("Returned cheque", "Rs 500 + GST", "Financial reasons"),
    ("Duplicate statement", "Rs 75 + GST", "Per statement"),
    ("Debit card replacement", "Rs 200 + GST", "Free on renewal"),
    ("Demand draft", "Rs 50 + GST", "Up to Rs 10,000"),
    ("Account closure", "Rs 500 + GST", "Within a year of opening"),
    ("SMS alerts", "Rs 15 + GST", "Per quarter"),
]
LIMITS_HEADER = ("Transaction", "Per transaction", "Per day")
LIMITS = [
    ("UPI payment", "Rs 1,00,000", "Rs 1,00,000"),
    ("ATM cash withdrawal", "Rs 20,000", "Rs 50,000"),
    ("Debit card purchase", "Rs 2,00,000", "Rs 2,00,000"),
]


def scan_pdf(src: str | Path, dst: str | Path, dpi: int = 200, seed: int = 0, skew: float = 0.6,
             noise: float = 8.0, quality: int = 75) -> Path:
    """An image-only copy of `src`: every page rendered at `dpi`, degraded, JPEG-compressed, re-wrapped."""
    rng = random.Random(seed)
    pages = []
    document = pdfium.PdfDocument(str(src))
    try:
        for index in range(len(document)):
            page = document[index]
            image = page.render(scale=dpi / 72, grayscale=True).to_pil().convert("L")
            page.close()
            pages.append(_jpeg(_degrade(image, rng, skew, noise), quality))
    finally:
        document.close()
    pages[0].save(dst, "PDF", save_all=True, append_images=pages[1:], resolution=float(dpi))
    return Path(dst)


def _degrade(image: Image.Image, rng: random.Random, skew: float, noise: float) -> Image.Image:
    image = image.rotate(rng.uniform(-skew, skew), resample=Image.BICUBIC, fillcolor=255)
    pixels = np.asarray(image, dtype=np.float32) * 0.94 + 8  # grey paper, ink not quite black
    pixels += np.random.default_rng(rng.randrange(2**32)).normal(0, noise, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def mixed_pdf(text_pdf: str | Path, scanned_pdf: str | Path, dst: str | Path, scanned_pages: set[int]) -> Path:
    """Pages (1-based) in `scanned_pages` come from the scan, the others keep their text layer."""
    text, scan = PdfReader(text_pdf), PdfReader(scanned_pdf)
    writer = PdfWriter()
    for index in range(len(text.pages)):
        writer.add_page((scan if index + 1 in scanned_pages else text).pages[index])
    with open(dst, "wb") as handle:
        writer.write(handle)
    return Path(dst)


def blank_scan(dst: str | Path, pages: int = 2) -> Path:
    """Scanned blank pages (grey, noisy paper): an image-only PDF in which OCR finds no text."""
    rng = random.Random(5)
    images = [_jpeg(_degrade(Image.new("L", (1000, 1400), 255), rng, 0, 6), 70) for _ in range(pages)]
    images[0].save(dst, "PDF", save_all=True, append_images=images[1:], resolution=150.0)
    return Path(dst)


def bomb_pdf(dst: str | Path, side: int = 40000) -> Path:
    """One page holding a side×side grey image: ~1.6 MB of Flate data that would inflate to side² bytes."""
    compressor = zlib.compressobj(9)
    block = b"\xff" * (1 << 22)
    data = b"".join([compressor.compress(block) for _ in range(side * side // len(block))]
                    + [compressor.compress(b"\xff" * (side * side % len(block))), compressor.flush()])
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /XObject << /Im0 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray /BitsPerComponent 8 "
        b"/Filter /FlateDecode /Length %d >>\nstream\n" % (side, side, len(data)) + data + b"\nendstream",
        b"<< /Length 35 >>\nstream\nq 595 0 0 842 0 0 cm /Im0 Do Q\nendstream",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    Path(dst).write_bytes(bytes(out))
    return Path(dst)


def fee_schedule_pdf(dst: str | Path) -> list[dict[str, str]]:
    """A one-page A5 schedule: a ruled fee table, and a limits table with one rule under its headings.

    Returns every body row as {column heading: cell}.
    """
    pdf = FPDF(format=A5)
    pdf.set_creation_date(_FIXED_DATE)
    pdf.set_margins(12, 14, 12)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 8, "Schedule of Service Charges", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(0, 4.5, "Charges below apply to savings accounts from 1 April 2024. GST at 18% is added "
                   "where shown.")
    pdf.ln(3)
    with pdf.table(col_widths=(50, 32, 42), line_height=5, text_align="LEFT", borders_layout="ALL") as table:
        for row in (FEES_HEADER, *FEES):
            table.row(row)
    pdf.ln(6)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 6, "Transaction limits", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.ln(2)
    with pdf.table(col_widths=(60, 32, 32), line_height=5, text_align="LEFT",
                   borders_layout="SINGLE_TOP_LINE") as table:
        for row in (LIMITS_HEADER, *LIMITS):
            table.row(row)
    pdf.output(str(dst))
    return [dict(zip(FEES_HEADER, row)) for row in FEES] + [dict(zip(LIMITS_HEADER, row)) for row in LIMITS]


def ruled_report_pdf(dst: str | Path, pages: int = 4, table_page: int = 3) -> Path:
    """Pages of prose under a rule drawn below the running header on every page; page `table_page` also
    holds the ruled fee table (the rule alone is decoration, not a table)."""
    pdf = FPDF(format=A5)
    pdf.set_creation_date(_FIXED_DATE)
    pdf.set_margins(12, 18, 12)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("Helvetica", "I", 8)
        pdf.text(12, 10, "Acme Bank - Annual report")
        pdf.line(12, 12, 136, 12)
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(0, 5, f"Section {number}. Our branches served more customers this year than ever "
                       "before, and most of them now use the app for everyday banking.")
        if number == table_page:
            pdf.ln(4)
            with pdf.table(col_widths=(50, 32, 42), line_height=5, text_align="LEFT") as table:
                for row in (FEES_HEADER, *FEES[:3]):
                    table.row(row)
    pdf.output(str(dst))
    return Path(dst)
