"""Scanned and mixed PDFs (OCR), table rows in PDFs, and the registry's new column, on files made here.

Scans are text PDFs rendered at 200 dpi, degraded (skew, noise, JPEG) and wrapped back as image-only PDFs by
data/scan_fixtures.py; the truth is what the fpdf2 writer returns. Small A5 files keep OCR to seconds.
"""

from __future__ import annotations

import difflib
import sqlite3
import sys
from pathlib import Path

import pytest

from ingest.faq import split_faq
from ingest.pdf import read_pages, strip_running_lines
from ingest.pipeline import ADDED, FAILED, ingest_file, ingest_paths
from retriever.hybrid import HybridRetriever
from retriever.registry import DocumentRecord, SqliteRegistry
from retriever.store import KnowledgeStore

DATA = Path(__file__).resolve().parents[1] / "data"
sys.path.insert(0, str(DATA))
import pdf_fixtures as fx  # noqa: E402
import scan_fixtures as sf  # noqa: E402

pytestmark = pytest.mark.timeout(600)

ENTRIES = fx.synthetic_entries(16, seed=13)
SECTIONS = [fx.Section(f"Topic {k + 1}", ENTRIES[k * 4:(k + 1) * 4]) for k in range(4)]
_TYPOGRAPHY = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-"})


def norm(text: str) -> str:
    """OCR reads straight quotes as curly ones: compare text up to typography and spacing."""
    return " ".join(text.translate(_TYPOGRAPHY).split())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The FAQ as a text PDF, its scan, and a mixed copy whose pages 2 and 4 are scanned."""
    folder = tmp_path_factory.mktemp("scans")
    truth = fx.write_faq_pdf(folder / "faq.pdf", SECTIONS, "qa", fx.Layout(fx.A5, 11))
    sf.scan_pdf(folder / "faq.pdf", folder / "faq-scan.pdf", dpi=200, seed=1)
    sf.mixed_pdf(folder / "faq.pdf", folder / "faq-scan.pdf", folder / "faq-mixed.pdf", {2, 4})
    return folder, truth


@pytest.fixture
def store(tmp_path, embedder):
    s = KnowledgeStore(tmp_path / "home", embedder)
    yield s
    s.close()


def recovered(truth: list[dict], pairs) -> int:
    """Pairs found with the same question, an answer at least 95% alike, on the same page."""
    found = {norm(p.question): p for p in pairs}
    count = 0
    for item in truth:
        pair = found.get(norm(item["question"]))
        if pair and pair.page == item["page"] and difflib.SequenceMatcher(
                None, norm(pair.answer), norm(item["answer"])).ratio() >= 0.95:
            count += 1
    return count


def test_scan_recovers_the_faq_pairs_page_by_page(files):
    folder, truth = files
    events = []
    pages = read_pages(folder / "faq-scan.pdf", lambda *event: events.append(event))
    assert len(pages) >= 4 and all(page.ocr and page.confidence >= 50 for page in pages)
    assert [page.number for page in pages] == list(range(1, len(pages) + 1))
    assert events == [("ocr", n, len(pages)) for n in range(1, len(pages) + 1)]
    pairs, _ = split_faq(strip_running_lines(pages))
    assert recovered(truth, pairs) >= 0.95 * len(truth), [p.question for p in pairs]


def test_mixed_pdf_reads_text_pages_and_ocrs_the_scanned_ones(files, store):
    folder, truth = files
    events = []
    result = ingest_file(store, folder / "faq-mixed.pdf", progress=lambda *event: events.append(event))
    assert result.status == ADDED, result.error
    doc = result.document
    assert doc.ocr_pages == "2, 4" and "OCR on pages 2, 4" in result.message()
    pages = [stage for stage, *_ in events if stage in ("reading", "ocr")]
    assert pages[:4] == ["reading", "ocr", "reading", "ocr"]
    assert doc.faq_pairs >= 0.95 * len(truth)
    assert store.find(doc_id=doc.id).ocr_pages == "2, 4"


def test_a_ticket_matches_the_same_faq_on_the_scan_as_on_the_text_pdf(files, tmp_path, embedder):
    folder, _ = files
    tickets = ["how can I get my parcel tracked", "I need to send back an item that arrived broken",
               "how do I change where my order is delivered"]
    tops = []
    for name in ("faq.pdf", "faq-scan.pdf"):
        store = KnowledgeStore(tmp_path / name, embedder)
        assert ingest_file(store, folder / name).status == ADDED
        retriever = HybridRetriever(store)
        tops.append([(norm(c.question), c.page) for c in (retriever.search(t, k=1)[0] for t in tickets)])
        store.close()
    assert tops[0] == tops[1]


def test_unreadable_scans_and_image_bombs_fail_alone(tmp_path, store):
    blank = sf.blank_scan(tmp_path / "blank.pdf")
    bars = fx.make_image_only_pdf(tmp_path / "bars.pdf")
    bomb = sf.bomb_pdf(tmp_path / "bomb.pdf")
    results = {r.path.name: r for r in ingest_paths(store, [blank, bars, bomb])}
    assert all(r.status == FAILED for r in results.values())
    assert results["blank.pdf"].error.startswith("blank.pdf: no usable text: no text layer, and OCR of 2 scanned")
    assert results["bars.pdf"].error.startswith("bars.pdf: no usable text")
    assert results["bomb.pdf"].error == ("bomb.pdf: page 1: image of 40000×40000 pixels is too large to decode "
                                         "(limit 200 megapixels)")
    assert store.documents() == [] and store.count() == 0


# --- tables ---------------------------------------------------------------------------------------------


def _row(cells: dict[str, str]) -> str:
    return " — ".join(f"{name}: {value}" for name, value in cells.items())


def test_table_rows_become_passages_with_their_headings(tmp_path, store):
    truth = sf.fee_schedule_pdf(tmp_path / "fees.pdf")
    events = []
    result = ingest_file(store, tmp_path / "fees.pdf", progress=lambda *event: events.append(event))
    assert result.status == ADDED, result.error
    texts = {text for _, text in store.iter_texts()}
    for cells in truth:
        assert any(text.endswith(_row(cells)) for text in texts), _row(cells)
    assert ("tables", 1, 1) in events
    top = HybridRetriever(store).search("how much does a returned cheque cost", k=3)
    assert any("Service: Returned cheque — Charge: Rs 500 + GST" in c.question and c.page == 1 for c in top)


def test_scanned_table_rows_are_read_by_ocr(tmp_path):
    from ingest.pdf_tables import table_rows

    truth = sf.fee_schedule_pdf(tmp_path / "fees.pdf")
    sf.scan_pdf(tmp_path / "fees.pdf", tmp_path / "fees-scan.pdf", dpi=200, seed=2, skew=0.3)
    rows = [norm(row.text) for row in table_rows(tmp_path / "fees-scan.pdf", scanned={1})]
    right = sum(any(text.endswith(norm(_row(cells))) for text in rows) for cells in truth)
    assert right >= len(truth) - 2, rows


def test_table_search_skips_pages_without_drawings(files):
    from ingest.pdf_tables import table_rows

    folder, _ = files
    events = []
    assert table_rows(folder / "faq.pdf", progress=lambda *event: events.append(event)) == []
    assert events == []  # no page had lines or fills: nothing was rendered


def test_a_rule_repeated_on_every_page_is_not_a_table(tmp_path):
    from ingest.pdf_tables import table_rows

    path = sf.ruled_report_pdf(tmp_path / "report.pdf", pages=4, table_page=3)
    events = []
    rows = table_rows(path, progress=lambda *event: events.append(event))
    assert events == [("tables", 1, 1)]  # only page 3 went through table detection
    assert [(row.page, row.text) for row in rows] == [(3, _row(dict(zip(sf.FEES_HEADER, fee)))) for fee in sf.FEES[:3]]


# --- the registry of an older home ------------------------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE documents (id TEXT NOT NULL PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE,
    pages INTEGER NOT NULL, chunks INTEGER NOT NULL, faq_pairs INTEGER NOT NULL, passages INTEGER NOT NULL,
    rows INTEGER NOT NULL, added_at REAL NOT NULL, status TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO documents VALUES ('abc', 'old.pdf', 'abc123', 3, 5, 4, 1, 0, 1700000000.0, 'ready');
"""


def test_a_registry_made_before_ocr_pages_opens_and_gains_the_column(tmp_path):
    path = tmp_path / "registry.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    registry = SqliteRegistry(path)
    (old,) = registry.documents()
    assert old.name == "old.pdf" and old.ocr_pages == ""
    new = DocumentRecord("def", "scan.pdf", "def456", 2, 3, 3, 0, 0, 1700000001.0, ocr_pages="1-2")
    registry.begin(new)
    registry.ready("def")
    assert registry.find(doc_id="def") == new
    registry.close()
    assert [d.ocr_pages for d in SqliteRegistry(path).documents()] == ["", "1-2"]  # reopening adds nothing twice
