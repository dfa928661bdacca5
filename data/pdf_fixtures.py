"""FAQ PDFs with a realistic layout, and broken PDFs, built on the fly for the samples, tests and benchmarks.

Everything here builds from its arguments or from text it generates itself, never from ../shared, so tests and
benchmarks run from the repository alone. Import it by path (data/ is not a package):
`sys.path.insert(0, "data"); import pdf_fixtures`. Needs fpdf2 (a dev dependency) and pypdf.

Every writer returns the ground truth: the pairs exactly as a correct parser returns them (whitespace
collapsed, markers and numbers stripped) with the page where the question starts and the page where the answer
ends, so that tests can compare exactly and count answers that cross a page break.
"""

from __future__ import annotations

import datetime as _dt
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

HEADER = "Acme Store — Help Centre FAQ"
STYLES = ("qa", "question", "numbered", "plain")
_FIXED_DATE = _dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc)
A4, A5, A6 = (210.0, 297.0), (148.0, 210.0), (105.0, 148.0)  # mm; fpdf2 warns about its own "A5"


@dataclass(frozen=True)
class Entry:
    """A question and its answer; paragraphs of the answer are separated by blank lines."""

    question: str
    answer: str


@dataclass(frozen=True)
class Section:
    heading: str
    entries: Sequence[Entry]


@dataclass(frozen=True)
class Layout:
    """Page size (width, height) and margins in mm, and body font size in points."""

    page_format: tuple[float, float] = A5
    font_size: float = 11
    margin: float = 15


def collapse(text: str) -> str:
    return " ".join(text.split())


class _FaqDocument(FPDF):
    """An fpdf2 document with the running header and a "Page N/M" footer on every page."""

    def __init__(self, layout: Layout, header: str):
        super().__init__(format=layout.page_format)
        self.core_fonts_encoding = "windows-1252"  # em dash and curly quotes in the core fonts
        self.set_creation_date(_FIXED_DATE)
        self.set_margins(layout.margin, layout.margin + 4, layout.margin)
        self.set_auto_page_break(True, margin=layout.margin + 4)
        self.running_header = header
        self.size = layout.font_size
        self.line_h = layout.font_size * 0.5
        self.widths: dict[tuple[str, float, str], float] = {}

    def header(self) -> None:
        self.set_font("Helvetica", "I", 8)
        self.set_y(self.t_margin - 10)
        self.cell(0, 5, self.running_header, align="R", new_x="LMARGIN", new_y="NEXT")
        self.set_y(self.t_margin)

    def footer(self) -> None:
        self.set_y(-(self.b_margin - 4))
        self.set_font("Helvetica", "I", 8)
        self.cell(0, 5, f"Page {self.page_no()}/{{nb}}", align="C")

    def room(self) -> float:
        return self.page_break_trigger - self.get_y()

    def text_height(self, text: str, style: str = "", size: float | None = None) -> float:
        self.set_font("Helvetica", style, size or self.size)
        return len(self.wrap(text)) * self.line_h

    def paragraph(self, text: str, style: str = "", size: float | None = None) -> None:
        self.set_font("Helvetica", style, size or self.size)
        for line in self.wrap(text):
            self.cell(0, self.line_h, line, new_x="LMARGIN", new_y="NEXT")

    def wrap(self, text: str) -> list[str]:
        """Greedy word wrap; fpdf2's own multi_cell is quadratic in the paragraph length, too slow for
        the 1,600-page benchmark file."""
        width, space = self.epw, self.word_width(" ")
        lines: list[list[str]] = [[]]
        used = 0.0
        for word in text.split():
            word_width = self.word_width(word)
            if lines[-1] and used + space + word_width > width:
                lines.append([])
                used = 0.0
            used += word_width + (space if len(lines[-1]) else 0)
            lines[-1].append(word)
        return [" ".join(words) for words in lines if words]

    def word_width(self, word: str) -> float:
        key = (self.font_style, self.font_size_pt, word)
        if key not in self.widths:
            self.widths[key] = self.get_string_width(word)
        return self.widths[key]


def write_faq_pdf(
    path: str | Path,
    sections: Sequence[Section],
    style: str = "qa",
    layout: Layout = Layout(),
    title: str = "Acme Store Help Centre",
    intro: str = "",
    header: str = HEADER,
    notice: str = "",
) -> list[dict[str, object]]:
    """Write an FAQ PDF and return its pairs: question, answer, section, page, end_page.

    `notice` goes into the document's metadata (Subject), not its text: licence and provenance notes.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}")
    pdf = _FaqDocument(layout, header)
    pdf.set_title(title)
    if notice:
        pdf.set_subject(notice)
    pdf.add_page()
    pdf.paragraph(title, "B", layout.font_size + 5)
    pdf.ln(2)
    for paragraph in _paragraphs(intro):
        pdf.paragraph(paragraph)
        pdf.ln(1.5)
    truth: list[dict[str, object]] = []
    number = 0
    for section in sections:
        pdf.ln(3)
        for index, entry in enumerate(section.entries):
            number += 1
            heading = section.heading if index == 0 else None
            truth.append(_write_entry(pdf, entry, style, number, heading))
    pdf.output(str(path))
    return truth


def _write_entry(pdf: _FaqDocument, entry: Entry, style: str, number: int, heading: str | None) -> dict:
    question, first_answer_prefix = _shape(entry.question, style, number)
    needed = pdf.text_height(question, "B") + pdf.line_h + 1
    if heading:
        needed += pdf.text_height(heading, "B", pdf.size + 2) + 2
    if pdf.room() < needed:  # keep heading and question with the start of their answer
        pdf.add_page()
    if heading:
        pdf.paragraph(heading, "B", pdf.size + 2)
        pdf.ln(1)
    page = pdf.page_no()
    pdf.paragraph(question, "B")
    pdf.ln(0.5)
    for i, paragraph in enumerate(_paragraphs(entry.answer)):
        pdf.paragraph(first_answer_prefix + paragraph if i == 0 else paragraph)
        pdf.ln(1)
    pdf.ln(2)
    return {
        "question": collapse(entry.question),
        "answer": collapse(entry.answer),
        "section": heading,
        "page": page,
        "end_page": pdf.page_no(),
    }


def _shape(question: str, style: str, number: int) -> tuple[str, str]:
    if style == "qa":
        return f"Q: {question}", "A: "
    if style == "question":
        return f"Question: {question}", "Answer: "
    if style == "numbered":
        return f"{number}. {question}", ""
    return question, ""


def _paragraphs(text: str) -> list[str]:
    return [collapse(part) for part in text.split("\n\n") if part.strip()]


# --- large synthetic FAQs (benchmarks) -----------------------------------------------------------------

_ACTIONS = [
    ("cancel", "an order"), ("change", "my delivery address"), ("return", "a damaged item"),
    ("track", "a parcel"), ("update", "my card details"), ("download", "an invoice"),
    ("close", "my account"), ("reset", "my password"), ("redeem", "a gift card"),
    ("report", "a missing item"), ("exchange", "a product for another size"), ("reorder", "a past purchase"),
]
_SENTENCES = [
    "Sign in to your account and open the 'My Orders' page.",
    "Select the order concerned and follow the steps shown on the screen.",
    "Most requests are handled within two business days.",
    "You will receive a confirmation email as soon as the change is saved.",
    "If the option is greyed out, the order has already left our warehouse.",
    "Our support team can help by phone on +1 (555) 014-2323 or through live chat.",
    "Keep your order number at hand, as it speeds up every request.",
    "Changes made after dispatch may incur a small handling fee.",
    "Refunds go back to the original payment method within five to seven business days.",
    "Business customers can also manage this from the company dashboard.",
    "Please note that some items, such as personalised products, are excluded.",
    "You can check the progress at any time from the 'Order History' section.",
]


def synthetic_entries(count: int, seed: int) -> list[Entry]:
    """Distinct, plausible FAQ entries with answers of one to three paragraphs."""
    rng = random.Random(seed)
    entries = []
    for k in range(1, count + 1):
        verb, thing = rng.choice(_ACTIONS)
        question = f"How do I {verb} {thing} (article {seed}-{k})?"
        paragraphs = [" ".join(rng.sample(_SENTENCES, rng.randint(2, 5))) for _ in range(rng.randint(1, 3))]
        entries.append(Entry(question, "\n\n".join(paragraphs)))
    return entries


def make_faq_pdf(
    path: str | Path, n_pages: int, seed: int = 0, style: str = "qa", layout: Layout = Layout(A4, 10)
) -> list[dict[str, object]]:
    """An FAQ PDF of exactly n_pages pages (for benchmarks at 10 / 200 / 1,600 pages); returns the truth.

    Entries are added in sections of eight until the last page is reached; an entry never spans more than
    one page break, so the count comes out exact.
    """
    per_page = 15  # more than ever fit on a page; the surplus is cut by the page count below
    entries = synthetic_entries(n_pages * per_page, seed)
    sections = [Section(f"Topic {i // 8 + 1}", entries[i : i + 8]) for i in range(0, len(entries), 8)]
    pdf = _FaqDocument(layout, HEADER)
    pdf.add_page()
    pdf.paragraph("Acme Store Help Centre", "B", layout.font_size + 5)
    truth: list[dict[str, object]] = []
    number = 0
    for section in sections:
        for index, entry in enumerate(section.entries):
            if pdf.page_no() >= n_pages and pdf.room() < pdf.text_height(entry.answer) + 4 * pdf.line_h + 12:
                pdf.output(str(path))
                return truth
            number += 1
            truth.append(_write_entry(pdf, entry, style, number, section.heading if index == 0 else None))
    pdf.output(str(path))
    return truth


# --- broken inputs ---------------------------------------------------------------------------------------


def small_faq_bytes() -> bytes:
    """A valid two-page FAQ PDF, as bytes, for deriving broken copies from."""
    buffer = io.BytesIO()
    pdf = _FaqDocument(Layout(A6, 9), HEADER)
    pdf.add_page()
    for entry in synthetic_entries(6, seed=7):
        pdf.paragraph(f"Q: {entry.question}", "B")
        pdf.paragraph(f"A: {collapse(entry.answer)}")
    pdf.output(buffer)
    return buffer.getvalue()


def make_encrypted_pdf(path: str | Path, user_password: str = "secret", owner_password: str = "owner") -> Path:
    """An encrypted copy of small_faq_bytes(); with user_password="" it opens without a password."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(small_faq_bytes())))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-128")
    with open(path, "wb") as handle:
        writer.write(handle)
    return Path(path)


def make_image_only_pdf(path: str | Path, pages: int = 2) -> Path:
    """A 'scanned' PDF: an embedded image and drawn shapes on each page, but no text layer."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (300, 400), 255)
    draw = ImageDraw.Draw(image)
    for y in range(30, 380, 18):
        draw.rectangle((20, y, 20 + (y * 7) % 240 + 20, y + 8), fill=40)
    pdf = FPDF(format=A5)
    pdf.set_creation_date(_FIXED_DATE)
    for _ in range(pages):
        pdf.add_page()
        pdf.image(image, x=15, y=15, w=118)
        pdf.rect(10, 10, 128, 190)
    pdf.output(str(path))
    return Path(path)


def make_truncated_pdf(path: str | Path) -> Path:
    """The first half of a valid PDF, as left by an interrupted download."""
    data = small_faq_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return Path(path)


def make_corrupt_pdf(path: str | Path) -> Path:
    """Starts and ends like a PDF, but the body in between is garbage."""
    garbage = random.Random(3).randbytes(4000)
    Path(path).write_bytes(b"%PDF-1.7\n" + garbage + b"\nstartxref\n1234\n%%EOF\n")
    return Path(path)


def make_text_as_pdf(path: str | Path) -> Path:
    """A plain text file that was renamed to .pdf."""
    Path(path).write_text("Q: How do I cancel an order?\nA: Open 'My Orders' and press Cancel.\n")
    return Path(path)
