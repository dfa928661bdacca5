"""The page, launched in-process and driven through gradio_client: chat (streamed), feedback, upload."""

from __future__ import annotations

import json

import pytest

import ui_support as us

pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from ui.settings import ServerSettings
    from ui.web import build_page, page_options

    with us.one_torch_thread():
        service = us.make_service(tmp_path_factory.mktemp("web") / "home")
        settings = ServerSettings(warm_up=False, max_upload_mb=1.0)
        blocks = build_page(service, settings)
        blocks.launch(server_name="127.0.0.1", server_port=us.free_port(), prevent_thread_lock=True, quiet=True,
                      **page_options(settings))
        try:
            yield service, blocks
        finally:
            blocks.close()


@pytest.fixture(scope="module")
def client(page):
    from gradio_client import Client

    return Client(page[1].local_url, verbose=False)


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _value(update):
    return update.get("value") if isinstance(update, dict) else update


def test_chat_streams_the_reasoning_then_a_sourced_answer(page, client):
    service, _ = page
    job = client.submit(us.MATCH_TICKET, [], api_name="/ask")
    chat, _, verdict, resolution, details, candidates, choices, _, status = job.result()
    assert len(job.outputs()) >= 2  # the reasoning bubble appears before the verdict
    assert [m["role"] for m in chat] == ["user", "assistant", "assistant"]
    assert _text(chat[0]) == us.MATCH_TICKET
    assert chat[1]["metadata"]["title"].startswith("🧠 Reasoning")
    assert us.MATCH_ANSWER in _text(chat[2]) and "home-faq.csv" in _text(chat[2])
    assert "Match" in verdict and "escalate" not in verdict.lower()
    assert _value(resolution) == us.MATCH_ANSWER
    assert "How do I reset my password?" in details and "home-faq.csv" in details
    assert candidates["data"][0][-1] == "pw-reset" and len(candidates["data"]) >= 2
    assert [value for _, value in choices["choices"]][-1] == "none"
    assert "1 documents" in status and "SmolLM2" in status

    # Feedback on that answer, through the page's buttons (the client keeps the session).
    assert "feedback saved" in client.predict(api_name="/thumbs_up")
    assert "right FAQ was card-lost" in client.predict("card-lost", api_name="/correct")
    answers = service.feedback.counts()
    assert answers["answers"] >= 1 and answers["down"] == 1

    # A ticket nothing answers: the verdict says escalate, and the history keeps the first answer.
    job = client.submit("What is the weather like on Mars tonight?", chat, api_name="/ask")
    chat, _, verdict, resolution, details, _, _, _, _ = job.result()
    assert len(chat) == 6 and us.MATCH_ANSWER in _text(chat[2])
    assert "NO MATCH — ESCALATE" in _text(chat[5])
    assert 'class="verdict escalate"' in verdict and "No match — escalate" in verdict
    assert _value(resolution) == ""


def test_upload_reports_each_file_and_keeps_the_good_ones(page, client, tmp_path):
    from gradio_client import handle_file

    service, _ = page
    good = us.write_faq_csv(tmp_path / "parcels.csv", [("parcel", "Where is my parcel?", "It is on its way.", "p")])
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(json.dumps({"question": "Can I pay by invoice?", "answer": "Yes, for business accounts."}) + "\n")
    bad = tmp_path / "notes.txt"
    bad.write_text("not a knowledge file")
    empty = tmp_path / "empty.csv"
    empty.write_text("question,answer\n")
    results, table, choices, status = client.predict(
        [handle_file(str(p)) for p in (good, bad, jsonl, empty)], api_name="/upload")
    lines = results.split("\n\n")
    assert len(lines) == 4
    assert lines[0].startswith("✅") and "parcels.csv: 1 rows" in lines[0]
    assert lines[1].startswith("❌") and "notes.txt: unsupported file type '.txt'" in lines[1]
    assert lines[2].startswith("✅") and "more.jsonl" in lines[2]
    assert lines[3].startswith("❌") and "empty.csv" in lines[3]
    assert sorted(row[1] for row in table["data"]) == ["home-faq.csv", "more.jsonl", "parcels.csv"]
    assert "3 documents" in status
    assert {d.name for d in service.documents()} == {"home-faq.csv", "more.jsonl", "parcels.csv"}
    assert sorted(p.name for p in service.uploads.rglob("*") if p.is_file()) == ["more.jsonl", "parcels.csv"]


def test_upload_of_a_markdown_help_article(page, client, tmp_path):
    from gradio_client import handle_file

    service, _ = page
    article = tmp_path / "returns.md"
    article.write_text("# Returns\n\n## Can I return a sofa or other large furniture?\n\nYes: book a free "
                       "courier collection under Orders > Return furniture.\n", encoding="utf-8")
    results, table, _, _ = client.predict([handle_file(str(article))], api_name="/upload")
    assert results.startswith("✅") and "returns.md: 1 FAQ pairs" in results
    assert "returns.md" in {row[1] for row in table["data"]}
    found = service.search("I want to send back the sofa I bought", k=1)[0]
    assert (found.source, found.section) == ("returns.md", "Returns")
