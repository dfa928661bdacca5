"""Files → store: idempotence, delete, bad input kept apart, nothing partial, restart survival."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.pipeline import ADDED, FAILED, UNCHANGED, ingest_file, ingest_paths
from retriever.hybrid import HybridRetriever
from retriever.store import KnowledgeStore

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data"))
import pdf_fixtures  # noqa: E402

FAQ_ROWS = [
    ("How do I reset my password?", "Use the 'Forgot password' link on the sign-in page.", "password"),
    ("Where is my parcel?", "Track it from Orders > Track delivery with your order number.", "track"),
    ("Can I get a refund?", "Refunds are paid to the original card within 5 working days.", "refund"),
    ("How do I close my account?", "Write to support and we close it within 48 hours.", "close"),
]


def write_csv(path: Path, rows=FAQ_ROWS) -> Path:
    lines = ["question,answer,label"] + [f'"{q}","{a}",{label}' for q, a, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path) -> Path:
    rows = [{"id": "T-1", "question": "The app crashes when I open it", "answer": "Update the app.",
             "label": "crash"},
            {"question": "Do you ship to Canada?", "answer": "Yes, in 7-10 days."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path, embedder):
    s = KnowledgeStore(tmp_path / "home", embedder)
    yield s
    s.close()


def test_csv_and_jsonl_ingest_and_search(store, tmp_path):
    results = ingest_paths(store, [write_csv(tmp_path / "faq.csv"), write_jsonl(tmp_path / "t.jsonl")])
    assert [r.status for r in results] == [ADDED, ADDED]
    assert [d.rows for d in store.documents()] == [4, 2]
    assert store.count() == 6
    top = HybridRetriever(store).search("I forgot my password and can't log in", k=3)[0]
    assert top.label == "password" and top.source == "faq.csv"
    shipped = HybridRetriever(store).search("can you deliver my order to Toronto", k=1)[0]
    assert shipped.answer == "Yes, in 7-10 days." and shipped.label is None


def test_reingest_same_bytes_changes_nothing(store, tmp_path):
    path = write_csv(tmp_path / "faq.csv")
    first = ingest_file(store, path)
    generation = store.generation
    again = ingest_file(store, path)
    assert again.status == UNCHANGED and again.document.id == first.document.id
    assert "already present" in again.message()
    assert store.count() == 4 and len(store.documents()) == 1 and store.generation == generation


def test_delete_removes_document_and_chunks(store, tmp_path):
    keep = ingest_file(store, write_jsonl(tmp_path / "t.jsonl")).document
    gone = ingest_file(store, write_csv(tmp_path / "faq.csv")).document
    store.delete_document(gone.id)
    assert [d.id for d in store.documents()] == [keep.id]
    assert store.count() == 2
    labels = {c.label for c in HybridRetriever(store).search("reset my password", k=5)}
    assert "password" not in labels
    with pytest.raises(KeyError):
        store.delete_document(gone.id)


def test_bad_files_fail_alone_and_leave_nothing(store, tmp_path):
    good = write_csv(tmp_path / "good.csv")
    bad = {
        "encrypted.pdf": pdf_fixtures.make_encrypted_pdf(tmp_path / "encrypted.pdf"),
        "scanned.pdf": pdf_fixtures.make_image_only_pdf(tmp_path / "scanned.pdf"),
        "truncated.pdf": pdf_fixtures.make_truncated_pdf(tmp_path / "truncated.pdf"),
        "notes.pdf": pdf_fixtures.make_text_as_pdf(tmp_path / "notes.pdf"),
        "empty.pdf": tmp_path / "empty.pdf",
        "missing.csv": tmp_path / "missing.csv",
        "latin1.csv": tmp_path / "latin1.csv",
        "doc.docx": tmp_path / "doc.docx",
        "notes.txt": tmp_path / "notes.txt",
    }
    bad["empty.pdf"].write_bytes(b"")
    bad["missing.csv"].write_text("question,label\nWhere is it?,track\n", encoding="utf-8")
    bad["latin1.csv"].write_bytes("question,answer\nCafé?,Oui\n".encode("latin-1"))
    bad["doc.docx"].write_bytes(b"PK\x03\x04")
    bad["notes.txt"].write_text("Q: How do I cancel?\nA: Press Cancel.\n")
    results = ingest_paths(store, [*bad.values(), good])
    by_name = {r.path.name: r for r in results}
    assert by_name["good.csv"].status == ADDED
    expected_reason = {
        "encrypted.pdf": "encrypted", "scanned.pdf": "no text layer", "truncated.pdf": "corrupt",
        "notes.pdf": "not a PDF", "empty.pdf": "empty", "missing.csv": "missing required column",
        "latin1.csv": "not UTF-8", "doc.docx": "not a DOCX", "notes.txt": "unsupported file type",
    }
    for name, reason in expected_reason.items():
        result = by_name[name]
        assert result.status == FAILED, name
        assert result.error.startswith(f"{name}: ") and reason in result.error, result.error
    assert [d.name for d in store.documents()] == ["good.csv"]
    assert store.count() == 4


class _FailingEmbedder:
    """The real embedder that breaks on its second batch, as a full disk or a kill would."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name, self.hash = inner.name, inner.hash

    def embed(self, texts):
        self.calls += 1
        if self.calls == 2:
            raise OSError("disk full")
        return self.inner.embed(texts)


def test_failure_mid_document_leaves_no_chunks(tmp_path, embedder):
    rows = [(f"Question number {i} about topic {i}?", f"Answer {i}.", f"l{i}") for i in range(600)]
    path = write_csv(tmp_path / "big.csv", rows)
    store = KnowledgeStore(tmp_path / "home", _FailingEmbedder(embedder))
    with pytest.raises(OSError):
        ingest_file(store, path)
    assert store.count() == 0 and store.documents() == []


def test_interrupted_ingest_is_cleaned_on_reopen(tmp_path, embedder):
    store = KnowledgeStore(tmp_path / "home", embedder)
    ingest_file(store, write_csv(tmp_path / "faq.csv"))
    # What a killed process leaves: chunks written, the registry row never marked ready.
    store.registry._db.execute("UPDATE documents SET status = 'ingesting'")
    store.registry._db.commit()
    store.close()
    reopened = KnowledgeStore(tmp_path / "home", embedder)
    assert reopened.count() == 0 and reopened.documents() == []


def test_state_survives_a_new_process(tmp_path):
    home = tmp_path / "home"
    csv_path = write_csv(tmp_path / "faq.csv")
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "ui.cli", "--home", str(home), *args],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    added = run("ingest", str(csv_path))
    assert added.returncode == 0, added.stderr
    assert "added" in added.stdout and "4 rows" in added.stdout
    found = run("search", "my parcel hasn't arrived, where is it?", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["label"] == "track"
    docs = json.loads(run("docs", "--json").stdout)
    assert [d["name"] for d in docs] == ["faq.csv"] and docs[0]["chunks"] == 4
