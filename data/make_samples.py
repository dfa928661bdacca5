"""Build data/samples/ from the Bitext customer-support data set: FAQ PDFs, past tickets, eval tickets.

Run from the repository root: `python data/make_samples.py [--source DIR]`. The output is deterministic
(fixed selection by SHA-1, fixed PDF dates), so re-running it changes nothing in git. It reads the Bitext
files only here, at generation time; the product and its tests read the committed outputs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pdf_fixtures import A5, A6, Entry, Layout, Section, collapse, write_faq_pdf  # noqa: E402

DEFAULT_SOURCE = Path("/work/shared/datasets/bitext_customer_support")
OUT = Path(__file__).resolve().parent / "samples"
PAST_PER_INTENT = 6
EVAL_IN_SCOPE = 45

PHONE = "+1 (555) 014-2323"
EMAIL = "support@acme-store.example"
URL = "www.acme-store.example"
HOURS = "Monday to Friday, 8am to 8pm ET"
NOTICE = (
    "Synthetic layout of the Bitext customer-support data set (CDLA-Sharing-1.0, "
    "https://spdx.org/licenses/CDLA-Sharing-1.0.html), changed by agent-helper: questions written by hand, "
    "placeholders filled with made-up values. See data/README.md."
)

# Sections and a hand-written FAQ question for each of the 27 Bitext intents.
SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Orders", [
        ("place_order", "How do I place an order?"),
        ("track_order", "How can I track my order?"),
        ("change_order", "Can I change an order after I have placed it?"),
        ("cancel_order", "How do I cancel an order?"),
        ("check_cancellation_fee", "Is there a fee for cancelling an order?"),
    ]),
    ("Shipping & Delivery", [
        ("delivery_options", "What delivery options do you offer?"),
        ("delivery_period", "How long does delivery take?"),
        ("set_up_shipping_address", "How do I set up a new shipping address?"),
        ("change_shipping_address", "How do I change the shipping address of an order?"),
    ]),
    ("Payments & Invoices", [
        ("check_payment_methods", "Which payment methods do you accept?"),
        ("payment_issue", "My payment did not go through. What should I do?"),
        ("check_invoice", "Where can I see the invoice for an order?"),
        ("get_invoice", "How do I download a copy of my invoice?"),
    ]),
    ("Refunds", [
        ("check_refund_policy", "What is your refund policy?"),
        ("get_refund", "How do I request a refund?"),
        ("track_refund", "How can I check the status of my refund?"),
    ]),
    ("Account", [
        ("create_account", "How do I create an account?"),
        ("registration_problems", "I cannot register. What can I do?"),
        ("edit_account", "How do I update my account details?"),
        ("recover_password", "I forgot my password. How do I reset it?"),
        ("switch_account", "How do I switch to another account?"),
        ("delete_account", "How do I delete my account?"),
    ]),
    ("Contact & Feedback", [
        ("contact_customer_service", "How can I contact customer service?"),
        ("contact_human_agent", "Can I speak to a human agent?"),
        ("complaint", "How do I file a complaint?"),
        ("review", "How can I leave a review for a product?"),
        ("newsletter_subscription", "How do I subscribe to the newsletter?"),
    ]),
]

INTRO = (
    "Welcome to the Acme Store Help Centre. This guide collects the questions our customers ask most often "
    "about orders, delivery, payments, refunds and their account, with the answers our support team gives. "
    f"If you cannot find what you need, write to {EMAIL} or call {PHONE}, {HOURS}."
)

# Values for the {{placeholders}} of Bitext responses; other Title Case placeholders name a page or a button
# of the shop ("{{Order History}}") and are kept as their own name.
PLACEHOLDERS = {
    **dict.fromkeys(
        ["Customer Support Phone Number", "Customer Service Phone Number", "Support Phone Number",
         "Customer Assistance Phone Number", "Phone Number", "customer support phone number",
         "Complaint Phone Number", "Customer Support Phone Number Anonymized"], PHONE),
    **dict.fromkeys(
        ["Customer Support Email", "Customer Support Email Address", "Customer Service Email Address",
         "Customer Service Email", "Support Email", "Support Email Address", "Complaint Email Address",
         "Feedback Email Address", "Email Address"], EMAIL),
    **dict.fromkeys(
        ["Customer Support Availability", "Customer Support Availability Anonymized", "Customer Support Hours",
         "Customer Service Hours", "Operating Hours", "Customer Assistance Hours",
         "Support Team Availability"], HOURS),
    **dict.fromkeys(
        ["Website Name", "Website Name Anonymized", "Company Website", "Website", "website",
         "Website/App Name", "Service Website", "Website URL"], URL),
    **dict.fromkeys(
        ["Order Number Anonymized", "Order ID Anonymized", "Purchase ID Anonymized", "Purchase Number Anonymized",
         "Order Number", "order number"], "AC-20417"),
    **dict.fromkeys(["Invoice Number Anonymized", "Bill Number Anonymized"], "INV-88213"),
    **dict.fromkeys(
        ["Refund Processing Time", "refund processing time", "Refund Timeframe", "Refund Processing Time Frame"],
        "5 to 7 business days"),
    "Company Name": "Acme Store",
    "Live Chat Anonymized": "Live Chat",
    "live chat": "live chat",
    "Purchase Date Anonymized": "March 3",
    "Name Field Anonymized": "Alex",
    "Payment Method Anonymized": "credit card",
    "Business Hours Start Time": "8am",
    "Business Hours End Time": "8pm",
    "number of days": "14",
    "refund period": "30 days",
    "Response Time": "24 hours",
    "Percentage": "10%",
    "tracking number": "AC-TRK-55102",
    "Review Website 1": "ReviewHub",
    "Review Website 2": "ShopRate",
    "Review Website 3": "StarVoice",
}

OUT_OF_SCOPE = [
    "Do you sell replacement batteries for electric scooters?",
    "What will the weather be like in Chicago this weekend?",
    "I'd like to apply for the warehouse assistant job I saw on your site. Who do I send my CV to?",
    "Can you recommend a good recipe for banana bread?",
    "My neighbour's dog barks all night, what are my legal options?",
    "Do you offer car insurance quotes?",
    "How do I install Windows on a new laptop?",
    "Can you book me a table for two at an Italian restaurant tonight?",
    "What is the exchange rate from euros to Japanese yen today?",
    "Are you hiring software engineers for remote positions?",
    "Can I get a prescription refill through your store?",
    "Who won the football match last night?",
    "Do you repair vintage watches in your workshop?",
    "I want to rent a flat downtown, do you have any listings?",
    "Can you translate this letter from German into English for me?",
]


def fill(text: str) -> str | None:
    """Replace {{placeholders}}; None when a placeholder is a description that no value can stand in for."""
    unknown = False

    def value(match: re.Match[str]) -> str:
        nonlocal unknown
        name = match.group(1).strip()
        if name in PLACEHOLDERS:
            return PLACEHOLDERS[name]
        if name[:1].isupper() or name.isdigit() or re.fullmatch(r"[0-9A-F]{16,}", name):
            return name
        unknown = True
        return name

    filled = re.sub(r"\{\{([^}]*)\}\}", value, text)
    return None if unknown else filled


def canonical_answer(text: str) -> str:
    return text.replace("support@example.com", EMAIL).replace("(123) 456-7890", PHONE)


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def load(source: Path) -> tuple[dict[str, str], dict[str, list[dict[str, str]]]]:
    """Canonical answer per intent, and training rows per intent in a fixed order (SHA-1 of the message)."""
    with (source / "bitext_canonical_responses_27.csv").open(encoding="utf-8") as handle:
        canonical = {row["intent"]: canonical_answer(row["response"]) for row in csv.DictReader(handle)}
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (source / "bitext_cs_train.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows[row["intent"]].append(row)
    for intent_rows in rows.values():
        intent_rows.sort(key=lambda row: _sha(row["instruction"]))
    return canonical, dict(rows)


def guide_answer(rows: list[dict[str, str]]) -> tuple[dict[str, str], str]:
    """A long agent response for the support guide: no "?" (plain FAQs find questions by it), no order
    numbers, a few paragraphs, ending a sentence."""
    for row in rows:
        text = fill(row["response"])
        if (
            text and "?" not in text and "Anonymized" not in row["response"] and 500 <= len(text) <= 1100
            and text.count("\n\n") >= 1 and re.search(r"[.!]$", text.strip())
        ):
            return row, text.strip()
    raise ValueError(f"no suitable long response for intent {rows[0]['intent']}")


def faq_sections(answers: dict[str, str]) -> list[Section]:
    return [
        Section(heading, [Entry(question, answers[intent]) for intent, question in items])
        for heading, items in SECTIONS
    ]


def write_pdfs(canonical: dict[str, str], rows: dict[str, list[dict[str, str]]]) -> tuple[list[dict], set[str]]:
    """Three FAQ PDFs in three shapes; returns the ground-truth pairs and the Bitext rows they used."""
    guide = {intent: guide_answer(intent_rows) for intent, intent_rows in rows.items()}
    used = {row["instruction"] for row, _ in guide.values()}
    specs = [
        ("acme_help_centre_qa.pdf", "qa", Layout(A5, 12, 20), canonical,
         "Acme Store Help Centre"),
        ("acme_faq_numbered.pdf", "numbered", Layout(A6, 9, 10), canonical,
         "Acme Store Frequently Asked Questions"),
        ("acme_support_guide.pdf", "plain", Layout(A5, 10, 14), {k: text for k, (_, text) in guide.items()},
         "Acme Store Customer Support Guide"),
    ]
    truth: list[dict] = []
    labels = {question: intent for _, items in SECTIONS for intent, question in items}
    for name, style, layout, answers, title in specs:
        for pair in write_faq_pdf(OUT / name, faq_sections(answers), style, layout, title, INTRO, notice=NOTICE):
            truth.append({"source": name, "label": labels[pair["question"]], **pair})
    return truth, used


def past_tickets(rows: dict[str, list[dict[str, str]]], skip: set[str]) -> tuple[list[dict], set[str]]:
    """The first PAST_PER_INTENT usable rows of each intent (in SHA-1 order), as resolved tickets."""
    chosen = []
    for intent in sorted(rows):
        usable = [row for row in rows[intent] if row["instruction"] not in skip and fill(row["response"])]
        usable = [row for row in usable if len(fill(row["response"]) or "") <= 600]
        chosen.extend(usable[:PAST_PER_INTENT])
    chosen.sort(key=lambda row: _sha("ticket:" + row["instruction"]))
    tickets = [
        {"id": f"ticket-{i:04d}", "question": collapse(row["instruction"]),
         "answer": (fill(row["response"]) or "").strip(), "label": row["intent"]}
        for i, row in enumerate(chosen, start=1)
    ]
    return tickets, {row["instruction"] for row in chosen}


def eval_tickets(rows: dict[str, list[dict[str, str]]], skip: set[str]) -> list[dict]:
    """In-scope tickets from rows used nowhere else, plus hand-written out-of-scope ones, shuffled."""
    by_intent = {intent: [row for row in rows[intent] if row["instruction"] not in skip] for intent in rows}
    in_scope = []
    for rank in range(EVAL_IN_SCOPE):
        intent = sorted(by_intent)[rank % len(by_intent)]
        row = by_intent[intent][-1 - rank // len(by_intent)]  # from the far end of the SHA-1 order
        in_scope.append({"ticket": collapse(row["instruction"]), "label": intent})
    items = in_scope + [{"ticket": text, "label": None} for text in OUT_OF_SCOPE]
    random.Random(2024).shuffle(items)
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with the Bitext CSV files")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    canonical, rows = load(args.source)
    truth, used = write_pdfs(canonical, rows)
    (OUT / "faq_pairs.json").write_text(json.dumps(truth, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    tickets, ticket_rows = past_tickets(rows, used)
    with (OUT / "past_tickets.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "question", "answer", "label"])
        writer.writeheader()
        writer.writerows(tickets)
    with (OUT.parent / "eval_tickets.jsonl").open("w", encoding="utf-8") as handle:
        for item in eval_tickets(rows, used | ticket_rows):
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    crossing = sum(pair["page"] != pair["end_page"] for pair in truth)
    print(f"wrote {len(truth)} FAQ pairs ({crossing} cross a page break), {len(tickets)} past tickets")


if __name__ == "__main__":
    main()
