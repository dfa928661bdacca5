"""The file parsers of ingest/, on real PDFs written by fpdf2 and read back by pypdf (no mocks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ingest import pdf as pdf_module
from ingest.errors import IngestError
from ingest.faq import FaqPair, Passage, split_faq
from ingest.pdf import PageText, read_pages, strip_running_lines
from ingest.tables import Row, read_rows

DATA = Path(__file__).resolve().parents[1] / "data"
sys.path.insert(0, str(DATA))
import pdf_fixtures as fx  # noqa: E402

SAMPLES = DATA / "samples"


def parse(path: Path) -> tuple[list[FaqPair], list[Passage]]:
    return split_faq(strip_running_lines(read_pages(path)))


def pages(*texts: str) -> list[PageText]:
    return [PageText(number, text) for number, text in enumerate(texts, start=1)]


def truth_of(pairs: list[dict]) -> list[tuple]:
    return [(pair["question"], pair["answer"], pair["page"]) for pair in pairs]


def found(pairs: list[FaqPair]) -> list[tuple]:
    return [(pair.question, pair.answer, pair.page) for pair in pairs]


# --- FAQ pairs from real PDFs --------------------------------------------------------------------------

CANCEL = (
    "Open the 'My Orders' page and choose the order. Press 'Cancel order' and confirm. If the parcel has "
    "already left our warehouse, the button is greyed out; refuse the delivery instead and the refund starts "
    "when the parcel is back with us.\n\nRefunds reach the original payment method within 5 to 7 business "
    "days. Gift cards are refunded as store credit."
)
SECTIONS = [
    fx.Section("Orders", [
        fx.Entry("How do I cancel an order?", CANCEL),
        fx.Entry(
            "Can I change the delivery address of an order that has already shipped?",
            "Not once it has shipped. Contact the carrier with the tracking number from your confirmation email; "
            "most carriers can redirect a parcel to a pick-up point for a small fee.\n\nBefore shipping, edit "
            "the address under 'My Orders'. The change applies to that order only; to change the address for "
            "future orders, update your address book under 'My Account'.",
        ),
    ]),
    fx.Section("Payments", [
        fx.Entry(
            "Which cards do you accept?",
            "Visa, Mastercard and American Express. We also take PayPal, and bank transfers for orders above "
            "$500; those ship once the transfer has cleared, usually within two business days.",
        ),
        fx.Entry(
            "Why was my card declined?",
            "Most declines come from the bank: check the expiry date, the billing address and your card's "
            "online spending limit, then try again. If it fails a second time, call your bank; we never see the "
            "reason for a decline.\n\nYou can also pay with PayPal or a gift card while the bank looks into it.",
        ),
    ]),
    fx.Section("Account", [
        fx.Entry(
            "How do I reset my password?",
            "Click 'Forgot password' on the sign-in page and enter the email address of your account. The link "
            "we send is valid for one hour; check your spam folder if it does not arrive within a few minutes.",
        ),
    ]),
]
INTRO = "This short guide answers the questions we hear most often."


def write_small_faq(path: Path, style: str = "qa") -> list[dict]:
    return fx.write_faq_pdf(path, SECTIONS, style, fx.Layout(fx.A6, 10, 10), intro=INTRO)


def test_pairs_that_cross_page_breaks_come_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "faq.pdf"
    truth = write_small_faq(path)
    assert [pair["end_page"] - pair["page"] for pair in truth] == [0, 1, 0, 0, 1]  # two answers cross a break
    pairs, passages = parse(path)

    assert len(pairs) == 5
    assert pairs[1] == FaqPair(
        "Can I change the delivery address of an order that has already shipped?",
        "Not once it has shipped. Contact the carrier with the tracking number from your confirmation email; "
        "most carriers can redirect a parcel to a pick-up point for a small fee. Before shipping, edit the "
        "address under 'My Orders'. The change applies to that order only; to change the address for future "
        "orders, update your address book under 'My Account'.",
        1,
    )
    assert pairs[0].answer.endswith("5 to 7 business days. Gift cards are refunded as store credit.")
    assert pairs[2] == FaqPair(  # the "Payments" heading is not glued to the previous answer
        "Which cards do you accept?",
        "Visa, Mastercard and American Express. We also take PayPal, and bank transfers for orders above $500; "
        "those ship once the transfer has cleared, usually within two business days.",
        2,
    )
    assert pairs[4] == FaqPair(
        "How do I reset my password?",
        "Click 'Forgot password' on the sign-in page and enter the email address of your account. The link we "
        "send is valid for one hour; check your spam folder if it does not arrive within a few minutes.",
        2,
    )
    assert not any("Page" in pair.answer or "Help Centre FAQ" in pair.answer for pair in pairs)
    assert passages == [Passage("Acme Store Help Centre\n" + INTRO, 1)]


@pytest.mark.parametrize("style", fx.STYLES)
def test_every_generated_shape_parses_exactly(tmp_path: Path, style: str) -> None:
    path = tmp_path / f"{style}.pdf"
    truth = write_small_faq(path, style)
    pairs, _ = parse(path)
    assert found(pairs) == truth_of(truth)


SAMPLE_TRUTH = json.loads((SAMPLES / "faq_pairs.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted({pair["source"] for pair in SAMPLE_TRUTH}))
def test_sample_pdfs_give_back_all_27_pairs_exactly(name: str) -> None:
    truth = [pair for pair in SAMPLE_TRUTH if pair["source"] == name]
    pairs, passages = parse(SAMPLES / name)
    assert len(truth) == 27 and len({pair["label"] for pair in truth}) == 27
    assert found(pairs) == truth_of(truth)
    assert sum(pair["page"] != pair["end_page"] for pair in truth) >= 2
    assert len(passages) == 1 and passages[0].page == 1 and passages[0].text.endswith("8am to 8pm ET.")


def test_large_generated_faq_has_the_exact_page_count_and_parses(tmp_path: Path) -> None:
    path = tmp_path / "big.pdf"
    truth = fx.make_faq_pdf(path, n_pages=12, seed=5, style="numbered")
    assert len(read_pages(path)) == 12
    assert found(parse(path)[0]) == truth_of(truth)


def test_dropping_pypdf_cache_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.pdf"
    fx.make_faq_pdf(path, n_pages=6, seed=1)
    expected = read_pages(path)
    monkeypatch.setattr(pdf_module, "_CACHE_LIMIT", 3)
    assert read_pages(path) == expected


# --- FAQ shapes on page text -----------------------------------------------------------------------------


def test_q_dot_a_dot_shape_with_wrapped_question() -> None:
    pairs, passages = split_faq(pages(
        "Q. How long do I have to return an item that I bought\nin one of your shops?\n"
        "A. Thirty days from the date of purchase.\nBring the receipt.\n"
        "Q. Do you ship abroad?\nA. Yes, to the EU and the UK."
    ))
    assert found(pairs) == [
        ("How long do I have to return an item that I bought in one of your shops?",
         "Thirty days from the date of purchase. Bring the receipt.", 1),
        ("Do you ship abroad?", "Yes, to the EU and the UK.", 1),
    ]
    assert passages == []


def test_question_answer_words_and_answer_across_pages() -> None:
    pairs, _ = split_faq(pages(
        "Question: Can I pay in instalments?\nAnswer: Yes, for orders above $200 we offer three",
        "interest-free instalments.\nQuestion: Is PayPal accepted?\nAnswer: It is.",
    ))
    assert found(pairs) == [
        ("Can I pay in instalments?", "Yes, for orders above $200 we offer three interest-free instalments.", 1),
        ("Is PayPal accepted?", "It is.", 2),
    ]


def test_numbered_questions_with_dot_and_parenthesis() -> None:
    pairs, passages = split_faq(pages(
        "Our most frequent questions, answered.\n"
        "1. How do I change my delivery slot after the order\nis confirmed?\n"
        "Open the order and pick a new slot. Slots close\nat midnight the day before.\n"
        "Returns\n"
        "12) Can I return a sale item?\nYes, within 14 days."
    ))
    assert found(pairs) == [
        ("How do I change my delivery slot after the order is confirmed?",
         "Open the order and pick a new slot. Slots close at midnight the day before.", 1),
        ("Can I return a sale item?", "Yes, within 14 days.", 1),
    ]
    assert passages == [Passage("Our most frequent questions, answered.", 1)]


def test_numbered_steps_in_an_answer_are_not_questions() -> None:
    pairs, _ = split_faq(pages(
        "1. How do I reset my password?\nFollow these steps:\n1. Open the sign-in page.\n2. Click 'Forgot'.\n"
        "2. Can I change my email?\nYes, under 'My Account'."
    ))
    assert [pair.question for pair in pairs] == ["How do I reset my password?", "Can I change my email?"]
    assert pairs[0].answer == "Follow these steps: 1. Open the sign-in page. 2. Click 'Forgot'."


def test_plain_question_lines_and_title_case_headings() -> None:
    pairs, passages = split_faq(pages(
        "Welcome to our help pages.\n"
        "Delivery And Returns\n"
        "How much does delivery cost for orders that weigh more\nthan twenty kilograms?\n"
        "A flat fee of $25 applies to heavy orders,\nwhatever the destination.\n"
        "Gift Cards\n"
        "Do gift cards expire?\nNo, they never expire.",
    ))
    assert found(pairs) == [
        ("How much does delivery cost for orders that weigh more than twenty kilograms?",
         "A flat fee of $25 applies to heavy orders, whatever the destination.", 1),
        ("Do gift cards expire?", "No, they never expire.", 1),
    ]
    assert passages == [Passage("Welcome to our help pages.", 1)]


def test_a_question_mark_inside_a_plain_answer_is_not_a_question() -> None:
    pairs, _ = split_faq(pages("Can I pick up my order?\nYes. Not sure which shop is nearest, or\nwhich is open?\n"
                               "Use the shop finder."))
    assert found(pairs) == [
        ("Can I pick up my order?", "Yes. Not sure which shop is nearest, or which is open? Use the shop finder.", 1)
    ]


def test_question_without_answer_is_kept_as_text() -> None:
    pairs, passages = split_faq(pages("Q: Is this thing on?\nQ: Do you deliver on Sundays?\nA: No."))
    assert found(pairs) == [("Do you deliver on Sundays?", "No.", 1)]
    assert passages == [Passage("Q: Is this thing on?", 1)]


def test_text_without_questions_becomes_passages_with_start_pages() -> None:
    texts = [
        "\n".join(f"Section {page}.{k}: our returns policy covers every item sold in shops and online." for k in range(15))
        for page in range(1, 4)
    ]
    _, passages = split_faq(pages(*texts))
    assert len(passages) > 3
    assert all(len(passage.text) <= 800 for passage in passages)
    assert passages[0].page == 1 and passages[-1].page == 3
    assert [passage.page for passage in passages] == sorted(passage.page for passage in passages)
    assert {1, 2, 3} <= {passage.page for passage in passages}


# --- running headers and footers -----------------------------------------------------------------------


def test_running_headers_footers_and_page_numbers_are_removed() -> None:
    stripped = strip_running_lines(pages(
        "Acme Store — Help Centre FAQ\nIssue 3, 2024\nFirst body line.\nPage 1/10",
        "Acme Store — Help Centre FAQ\nIssue 3, 2024\nSecond body line.\nAcme Store — Help Centre FAQ\nMore.\n- 2 -",
        "Acme Store — Help Centre FAQ\nIssue 3, 2024\nThird body line.\nPage 3 of 10",
        "Page 4/10\nFourth body line.\n4",
    ))
    assert [page.text for page in stripped] == [
        "First body line.", "Second body line.\nAcme Store — Help Centre FAQ\nMore.", "Third body line.",
        "Fourth body line.",
    ]
    assert [page.number for page in stripped] == [1, 2, 3, 4]


def test_two_pages_need_the_line_on_both() -> None:
    stripped = strip_running_lines(pages("Manual v2\nOne.\nPage 1", "Other top\nTwo.\nPage 2"))
    assert [page.text for page in stripped] == ["Manual v2\nOne.", "Other top\nTwo."]
    stripped = strip_running_lines(pages("Manual v2\nOne.", "Manual v2\nTwo."))
    assert [page.text for page in stripped] == ["One.", "Two."]


def test_a_line_on_few_pages_is_kept() -> None:
    stripped = strip_running_lines(pages("Orders\nA.", "Orders\nB.", "Refunds\nC.", "Account\nD.", "Help\nE."))
    assert [page.text.splitlines()[0] for page in stripped] == ["Orders", "Orders", "Refunds", "Account", "Help"]


# --- bad PDFs ----------------------------------------------------------------------------------------------


def assert_rejected(path: Path, reason: str) -> None:
    with pytest.raises(IngestError) as caught:
        read_pages(path)
    assert str(caught.value).startswith(f"{path.name}: {reason}"), str(caught.value)


def test_empty_pdf(tmp_path: Path) -> None:
    (tmp_path / "empty.pdf").write_bytes(b"")
    assert_rejected(tmp_path / "empty.pdf", "empty file (0 bytes)")


def test_text_file_named_pdf(tmp_path: Path) -> None:
    assert_rejected(fx.make_text_as_pdf(tmp_path / "notes.pdf"), "not a PDF (the file does not start with %PDF-)")


def test_encrypted_pdf_needs_a_password(tmp_path: Path) -> None:
    assert_rejected(fx.make_encrypted_pdf(tmp_path / "locked.pdf"), "encrypted PDF: a password is required")


def test_encrypted_pdf_with_empty_user_password_is_read(tmp_path: Path) -> None:
    path = fx.make_encrypted_pdf(tmp_path / "owner_only.pdf", user_password="")
    pairs, _ = parse(path)
    assert len(pairs) == 6 and pairs[0].question.startswith("How do I")


def test_image_only_pdf_that_ocr_cannot_read(tmp_path: Path) -> None:
    # Drawn bars, no letters: the pages are OCR'd (scanned: an image and no text layer) and give nothing.
    assert_rejected(
        fx.make_image_only_pdf(tmp_path / "scan.pdf"),
        "no usable text: no text layer, and OCR of 2 scanned page(s) found no readable text",
    )


def test_truncated_pdf(tmp_path: Path) -> None:
    assert_rejected(fx.make_truncated_pdf(tmp_path / "cut.pdf"), "corrupt or unreadable PDF (truncated")


def test_corrupt_pdf(tmp_path: Path) -> None:
    assert_rejected(fx.make_corrupt_pdf(tmp_path / "junk.pdf"), "corrupt or unreadable PDF (")


# --- CSV and JSONL --------------------------------------------------------------------------------------


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding, newline="")
    return path


def assert_table_rejected(path: Path, reason: str) -> None:
    with pytest.raises(IngestError) as caught:
        read_rows(path)
    assert str(caught.value) == f"{path.name}: {reason}"


def test_csv_rows_with_optional_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "kb.csv", "\ufeffID,Question,Answer,Label,notes\n"
                 't-1,Where is my parcel?,"Use the tracking link.\n\nIt updates hourly.",track_order,x\n'
                 "\n"
                 "t-2,Can I cancel?,Yes.,,\n")
    assert read_rows(path) == [
        Row("Where is my parcel?", "Use the tracking link.\n\nIt updates hourly.", "t-1", "track_order", 2),
        Row("Can I cancel?", "Yes.", "t-2", None, 6),
    ]


def test_csv_without_optional_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "kb.csv", "question,answer\nHi?,Hello.\n")
    assert read_rows(path) == [Row("Hi?", "Hello.", None, None, 2)]


def test_jsonl_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "kb.jsonl", '{"Question": "Hi?", "answer": "Hello.", "id": 7}\n\n'
                 '{"question": "Bye?", "answer": "Bye.", "label": "farewell", "extra": [1]}\n')
    assert read_rows(path) == [Row("Hi?", "Hello.", "7", None, 1), Row("Bye?", "Bye.", None, "farewell", 3)]


def test_sample_past_tickets_load() -> None:
    rows = read_rows(SAMPLES / "past_tickets.csv")
    assert 150 <= len(rows) <= 300
    assert rows[0].id == "ticket-0001" and len({row.label for row in rows}) == 27
    assert not any("{{" in row.answer for row in rows)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.csv", "", "empty file"),
        ("blank.jsonl", "\n\n", "empty file"),
        ("header.csv", "question,answer\n", "no rows (only a header)"),
        ("cols.csv", "Question,reply,id\nA?,B\n", "missing required column(s): answer; found: question, reply, id"),
        ("dup.csv", "question,answer,Answer\na,b,c\n", "duplicate column(s): answer"),
        ("blank_answer.csv", "question,answer\nA?,B\nC?,  \n", "line 3: empty answer"),
        ("extra.csv", "question,answer\nA?,B,C\n", "line 2: 3 fields but the header has 2 (quote fields that contain commas)"),
        ("bad.jsonl", '{"question": "A?", "answer": "B"}\n{"question": "C?",\n',
         "line 2: malformed JSON (Expecting property name enclosed in double quotes at column 19)"),
        ("list.jsonl", '["A?", "B"]\n', "line 1: expected a JSON object, got an array"),
        ("key.jsonl", '{"question": "A?", "text": "B"}\n', "line 1: missing required key(s): answer; found: question, text"),
        ("empty_q.jsonl", '{"question": "A?", "answer": "B"}\n{"question": " ", "answer": "B"}\n', "line 2: empty question"),
        ("null.jsonl", '{"question": null, "answer": "B"}\n', "line 1: empty question"),
        ("obj.jsonl", '{"question": "A?", "answer": {"text": "B"}}\n', "line 1: 'answer' must be a string, got an object"),
        ("kb.txt", "question,answer\n", "unsupported file type .txt; expected .csv or .jsonl"),
    ],
)
def test_table_errors(tmp_path: Path, name: str, content: str, reason: str) -> None:
    assert_table_rejected(write(tmp_path / name, content), reason)


def test_table_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path / "latin.csv", "question,answer\nCafé?,Oui.\n", encoding="latin-1")
    assert_table_rejected(path, "not UTF-8 text (byte 0xe9 at offset 19); save it as UTF-8")


def test_binary_file_named_csv(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00question,answer")
    assert_table_rejected(path, "binary file, not CSV text (NUL byte at offset 5)")


def test_pdf_named_csv_is_binary(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_bytes(fx.small_faq_bytes())
    with pytest.raises(IngestError, match=r"^faq\.csv: (binary file|not UTF-8 text)"):
        read_rows(path)
