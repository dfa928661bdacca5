"""The agents' page (Gradio Blocks): ask with streamed reasoning, documents, feedback, status line.

A thin layer over `app.service.AgentHelper`: the components are laid out in `_ask_tab` and
`_documents_tab`; each handler is a small named function that calls the service and formats its
result (an answer through its one view model, app/views.py) as a {component: value} update.
`build_page(service, settings)` gives the Blocks (queue configured); `page_options(settings)` the
keyword arguments that `launch()` or `gr.mount_gradio_app()` take for it (CSS, login, upload cap).

Named API endpoints (for gradio_client; the REST API in ui/api.py is the supported integration):
`/ask` (ticket, history) streams; `/thumbs_up`, `/thumbs_down`, `/correct` (candidate id or "none") rate
the session's latest answer; `/upload` (files); `/status`.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from app.feedback import DOWN, NONE_ID, UP, FeedbackError
from app.service import MAX_TICKET_CHARS, AgentHelper, Answer
from app.views import AnswerView, CandidateRow
from ingest.progress import EMBEDDING, OCR, READING, TABLES

if TYPE_CHECKING:
    from ui.settings import ServerSettings

TITLE = "agent-helper"
STREAM_INTERVAL_S = 0.08
"""At most this often a streamed chat update is sent (each carries the whole conversation)."""

CSS = """
#verdict .verdict { padding: 14px 18px; border-radius: 10px; font-size: 1.25em; font-weight: 700; }
#verdict .verdict small { display: block; font-size: 0.72em; font-weight: 500; margin-top: 4px; }
#verdict .verdict.match { background: #e7f6ec; color: #14532d; border: 2px solid #16a34a; }
#verdict .verdict.escalate { background: #fdecec; color: #7f1d1d; border: 3px solid #dc2626;
  text-transform: uppercase; letter-spacing: 0.03em; }
#verdict .verdict.idle { background: transparent; color: #6b7280; border: 1px dashed #9ca3af; font-weight: 500; }
#status-line { font-size: 0.9em; opacity: 0.85; }
#resolution textarea { font-size: 1.05em; }
"""

_IDLE = '<div class="verdict idle">Paste a ticket and press Ask.</div>'
_THINKING = '<div class="verdict idle">Reading the knowledge base…</div>'
_LOADING = '<div class="verdict idle">Loading the model (first question only, ~15 s)…</div>'
_DOC_HEADERS = {"id": "id", "name": "name", "pages": "pages", "chunks": "chunks", "faq_pairs": "FAQ pairs",
                "passages": "passages", "rows": "rows", "ocr_pages": "OCR pages", "added_at": "added"}
"""DocumentRecord fields shown, with their column titles."""


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


def page_options(settings: "ServerSettings | None" = None) -> dict:
    """Keyword arguments for `blocks.launch(...)` / `gr.mount_gradio_app(...)`."""
    options: dict = {"css": CSS, "footer_links": ["api"]}
    if settings is not None:
        options["max_file_size"] = settings.transfer_limit_bytes
        if settings.auth_enabled:
            options["auth"] = settings.check_login
            options["auth_message"] = "agent-helper: sign in with the account your administrator gave you."
    return options


# -- rendering an answer (pure) -----------------------------------------------------------------------


def verdict_banner(view: AnswerView) -> str:
    if view.escalate:
        return ('<div class="verdict escalate">⛔ No match — escalate'
                f'<small>Nothing in the knowledge base answers this ticket '
                f'(confidence {view.confidence}). Hand it to a specialist.</small></div>')
    return (f'<div class="verdict match">✅ {_escape(view.headline)}'
            f'<small>{_escape(view.question)} — {_escape(view.source)}</small></div>')


def answer_markdown(view: AnswerView) -> str:
    """The chat message that closes an answer."""
    if view.escalate:
        lines = ["### ⛔ NO MATCH — ESCALATE\n",
                 f"Nothing in the knowledge base answers this ticket (confidence {view.confidence}). "
                 "Hand it to a specialist."]
        if view.question:
            lines.append(f"\nClosest entry (not a match): *{view.question}* — {view.source}, "
                         f"similarity {view.similarity:.2f}")
    else:
        lines = [f"### ✅ Match — {view.confidence} confidence\n", "**Resolution**\n", view.resolution, "",
                 f"**Matched FAQ:** {view.question}  ", f"**Source:** {view.source}"]
    lines += [f"\n<small>ℹ️ {_escape(note)}</small>" for note in view.notes]
    return "\n".join(lines)


def answer_details(view: AnswerView) -> str:
    if view.escalate:
        return f"**No match — escalate.** Confidence {view.confidence} · {view.latency_s:.1f} s"
    label = f" · label `{view.label}`" if view.label else ""
    return (f"**Matched FAQ:** {view.question}\n\n**Source:** {view.source}{label}\n\n"
            f"**Confidence:** {view.confidence} · {view.latency_s:.1f} s")


def candidate_rows(view: AnswerView) -> list[list]:
    return [c.cells() for c in view.candidates]


def _result_line(result) -> str:
    icon = {"added": "✅", "unchanged": "♻️", "failed": "❌"}.get(result.status, "•")
    return f"{icon} {_escape(result.message().strip())}"


def _document_cell(document, field: str):
    value = getattr(document, field)
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(value)) if field == "added_at" else value


def document_rows(service: AgentHelper) -> list[list]:
    return [[_document_cell(d, field) for field in _DOC_HEADERS] for d in service.documents()]


def document_choices(service: AgentHelper) -> list[tuple[str, str]]:
    return [(f"{d.name} ({d.id})", d.id) for d in service.documents()]


# -- the components ---------------------------------------------------------------------------------


@dataclass
class AskTab:
    chat: gr.Chatbot
    ticket: gr.Textbox
    ask_button: gr.Button
    clear_button: gr.Button
    verdict: gr.HTML
    resolution: gr.Textbox
    details: gr.Markdown
    candidates: gr.Dataframe
    up_button: gr.Button
    down_button: gr.Button
    correct: gr.Dropdown
    correct_button: gr.Button
    feedback_message: gr.Markdown
    answers_map: gr.State
    """Chat message index → answer id (for 👍/👎 on any message)."""
    last_answer: gr.State
    """Answer id of the newest answer (the feedback panel)."""

    @property
    def outputs(self) -> list:
        """What an answer updates, in the order gradio_client returns them."""
        return [self.chat, self.ticket, self.verdict, self.resolution, self.details, self.candidates,
                self.correct, self.answers_map, self.last_answer, self.feedback_message]


@dataclass
class DocumentsTab:
    files: gr.File
    upload_button: gr.Button
    upload_results: gr.Markdown
    documents: gr.Dataframe
    to_delete: gr.Dropdown
    delete_button: gr.Button
    refresh_button: gr.Button
    delete_message: gr.Markdown


def _ask_tab() -> AskTab:
    with gr.Row():
        with gr.Column(scale=3):
            chat = gr.Chatbot(label="Conversation", height=520, elem_id="chat", buttons=["copy"],
                              feedback_options=("Like", "Dislike"),
                              placeholder="Answers, with their reasoning and sources, appear here.")
            ticket = gr.Textbox(label="Ticket", lines=4, max_length=MAX_TICKET_CHARS,
                                placeholder="Paste the customer's message here…", elem_id="ticket")
            with gr.Row():
                ask_button = gr.Button("Ask", variant="primary", elem_id="ask-button")
                clear_button = gr.Button("Clear conversation", variant="secondary")
        with gr.Column(scale=2):
            verdict = gr.HTML(_IDLE, elem_id="verdict")
            resolution = gr.Textbox(label="Resolution — copy it into your reply", lines=6, interactive=False,
                                    buttons=["copy"], elem_id="resolution")
            details = gr.Markdown(elem_id="details")
            with gr.Accordion("Other candidates", open=True):
                candidates = gr.Dataframe(headers=list(CandidateRow.HEADERS), interactive=False, wrap=True,
                                          column_widths=["36px", "40%", "84px", "84px", "20%", "15%"],
                                          elem_id="candidates")
            with gr.Group():
                gr.Markdown("**Was this answer right?**")
                with gr.Row():
                    up_button = gr.Button("👍 Right", size="sm")
                    down_button = gr.Button("👎 Wrong", size="sm")
                correct = gr.Dropdown(label="The right FAQ was…", choices=[], interactive=True)
                correct_button = gr.Button("Save correction", size="sm")
                feedback_message = gr.Markdown(elem_id="feedback-message")
    return AskTab(chat, ticket, ask_button, clear_button, verdict, resolution, details, candidates, up_button,
                  down_button, correct, correct_button, feedback_message, gr.State({}), gr.State(None))


def _documents_tab(settings: "ServerSettings") -> DocumentsTab:
    files = gr.File(label=f"Knowledge files ({', '.join(settings.allowed_suffixes)}; several at once)",
                    file_count="multiple", type="filepath", elem_id="upload")
    upload_button = gr.Button("Add to knowledge base", variant="primary", elem_id="upload-button")
    upload_results = gr.Markdown(elem_id="upload-results")
    documents = gr.Dataframe(headers=list(_DOC_HEADERS.values()), interactive=False, label="Documents",
                             elem_id="documents")
    with gr.Row():
        to_delete = gr.Dropdown(label="Document", choices=[], interactive=True, scale=3)
        delete_button = gr.Button("Delete document", variant="stop", scale=1)
        refresh_button = gr.Button("Refresh", scale=1)
    return DocumentsTab(files, upload_button, upload_results, documents, to_delete, delete_button, refresh_button,
                        gr.Markdown())


# -- handlers: asking -----------------------------------------------------------------------------


def ask(service: AgentHelper, tab: AskTab, status_line, text: str, history: list | None, mapping: dict | None):
    """Stream one answer into the chat: the ticket, the reasoning as it is written, then the verdict."""
    text = (text or "").strip()
    if not text:
        raise gr.Error("Paste a ticket first.")
    history = [*(history or []), {"role": "user", "content": text}]
    thinking = {"role": "assistant", "content": "…", "metadata": {"title": "🧠 Reasoning", "status": "pending"}}
    history.append(thinking)
    yield {tab.chat: history, tab.ticket: "", tab.verdict: _THINKING if service.model_loaded else _LOADING,
           tab.resolution: gr.update(value="", placeholder=""), tab.details: "", tab.candidates: None,
           tab.correct: gr.update(choices=[], value=None), tab.last_answer: None, tab.feedback_message: ""}
    pieces: list[str] = []
    sent = 0.0
    for item in service.ask_stream(text):
        if isinstance(item, Answer):
            yield _answered(service, tab, status_line, history, dict(mapping or {}), item, pieces)
            return
        pieces.append(item)
        if time.monotonic() - sent >= STREAM_INTERVAL_S:
            sent = time.monotonic()
            thinking["content"] = "".join(pieces)
            yield {tab.chat: history, tab.verdict: _THINKING}


def _answered(service, tab: AskTab, status_line, history: list, mapping: dict, answer: Answer, pieces) -> dict:
    view = AnswerView.of(answer)
    history[-1]["content"] = view.reasoning or "".join(pieces) or "(no reasoning written)"
    history[-1]["metadata"] = {"title": f"🧠 Reasoning ({view.latency_s:.1f} s)", "status": "done"}
    history.append({"role": "assistant", "content": answer_markdown(view)})
    if view.answer_id:  # the reasoning and the verdict message both rate this answer
        mapping.update({str(len(history) - 2): view.answer_id, str(len(history) - 1): view.answer_id})
    resolution = (gr.update(value="", placeholder="No match — escalate to a specialist.") if view.escalate
                  else gr.update(value=view.resolution, placeholder=""))
    return {tab.chat: history, tab.verdict: verdict_banner(view), tab.resolution: resolution,
            tab.details: answer_details(view), tab.candidates: candidate_rows(view),
            tab.correct: gr.update(choices=view.choices, value=None), tab.answers_map: mapping,
            tab.last_answer: view.answer_id, tab.feedback_message: "", status_line: service.status_line()}


def clear(tab: AskTab) -> dict:
    return {tab.chat: [], tab.answers_map: {}, tab.last_answer: None, tab.verdict: _IDLE,
            tab.resolution: gr.update(value="", placeholder=""), tab.details: "", tab.candidates: None,
            tab.correct: gr.update(choices=[], value=None), tab.feedback_message: ""}


def rate(service: AgentHelper, answer_id: str | None, rating: str | None, correct_id: str | None) -> str:
    if not answer_id:
        return "Ask something first: feedback applies to the latest answer."
    if rating is None and not correct_id:
        return "Choose the right FAQ (or “none”) first."
    try:
        record = service.give_feedback(answer_id, rating, correct_id or None)
    except FeedbackError as error:
        return f"❌ {_escape(str(error))}"
    named = ""
    if record.correct_id == NONE_ID:
        named = " — noted: nothing matched, it should have escalated"
    elif record.correct_id:
        named = f" — noted: the right FAQ was {record.correct_id}"
    return f"{'👍' if record.rating == UP else '👎'} Thanks, feedback saved{named}."


def rate_message(service: AgentHelper, mapping: dict | None, data: gr.LikeData) -> str:
    """👍/👎 on a chat message: rates the answer that message belongs to."""
    index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
    answer_id = (mapping or {}).get(str(index))
    if not answer_id:
        return "Rate an answer message (the one with the verdict)."
    liked = data.liked if isinstance(data.liked, bool) else str(data.liked).lower() == "like"
    return rate(service, answer_id, UP if liked else DOWN, None)


# -- handlers: documents --------------------------------------------------------------------------


def documents_view(service: AgentHelper):
    """(documents table, delete choices, status line)."""
    return (document_rows(service), gr.update(choices=document_choices(service), value=None),
            service.status_line())


def upload(service: AgentHelper, settings: "ServerSettings", paths: list[str] | None, progress=gr.Progress()):
    paths = [p for p in (paths or []) if p]
    if not paths:
        return ("Choose one or more files first.", *documents_view(service))
    lines = []
    for index, path in enumerate(map(Path, paths)):
        progress(index / len(paths), desc=f"{path.name}: starting")
        report = partial(_upload_progress, progress, index, len(paths), path.name)
        lines.append(_result_line(service.upload(path.name, path, settings.allowed_suffixes, report,
                                                 settings.max_upload_bytes)))
    progress(1.0, desc="done")
    return ("\n\n".join(lines), *documents_view(service))


_STAGE_SPANS = {READING: (0.0, 0.6), OCR: (0.0, 0.6), TABLES: (0.6, 0.7), EMBEDDING: (0.7, 1.0)}
"""Where each ingest stage runs within one file's share of the bar (reading and OCR share the pages)."""


def _upload_progress(progress, index: int, total: int, name: str, stage: str, done: int, of: int) -> None:
    low, high = _STAGE_SPANS.get(stage, (0.0, 1.0))
    within = low + (high - low) * (done / of if of else 1.0)
    progress((index + within) / total, desc=f"{name}: {stage} {done}/{of}")


def delete(service: AgentHelper, doc_id: str | None):
    if not doc_id:
        return ("Choose a document first.", *documents_view(service))
    try:
        doc = service.delete(doc_id)
        message = f"🗑️ Deleted {_escape(doc.name)} ({doc.chunks} chunks)."
    except KeyError:
        message = f"❌ No document with id {_escape(doc_id)} (already deleted?)."
    return (message, *documents_view(service))


# -- the page ---------------------------------------------------------------------------------------


def build_page(service: AgentHelper, settings: "ServerSettings | None" = None) -> gr.Blocks:
    from ui.settings import ServerSettings

    settings = settings or ServerSettings()
    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as page:
        status_line = gr.Markdown(elem_id="status-line")
        with gr.Tab("Ask"):
            tab = _ask_tab()
        with gr.Tab("Documents"):
            docs = _documents_tab(settings)
        _wire_ask(service, settings, tab, status_line)
        _wire_documents(service, settings, docs, status_line)
        page.load(lambda: documents_view(service), None, [docs.documents, docs.to_delete, status_line],
                  api_name="status")
    page.queue(default_concurrency_limit=settings.queue_concurrency, max_size=settings.max_queue)
    return page


def _wire_ask(service: AgentHelper, settings: "ServerSettings", tab: AskTab, status_line) -> None:
    gr.on([tab.ask_button.click, tab.ticket.submit], partial(ask, service, tab, status_line),
          [tab.ticket, tab.chat, tab.answers_map], [*tab.outputs, status_line], api_name="ask",
          concurrency_limit=settings.chat_concurrency, concurrency_id="ask", show_progress="minimal")
    tab.clear_button.click(partial(clear, tab), None, [o for o in tab.outputs if o is not tab.ticket],
                           api_name=False, queue=False)
    tab.up_button.click(lambda a: rate(service, a, UP, None), tab.last_answer, tab.feedback_message,
                        api_name="thumbs_up")
    tab.down_button.click(lambda a: rate(service, a, DOWN, None), tab.last_answer, tab.feedback_message,
                          api_name="thumbs_down")
    tab.correct_button.click(lambda a, c: rate(service, a, None, c), [tab.last_answer, tab.correct],
                             tab.feedback_message, api_name="correct")

    def on_like(mapping: dict | None, data: gr.LikeData) -> str:  # a function: Gradio finds LikeData by its hint
        return rate_message(service, mapping, data)

    tab.chat.like(on_like, tab.answers_map, tab.feedback_message, api_name=False)


def _wire_documents(service: AgentHelper, settings: "ServerSettings", docs: DocumentsTab, status_line) -> None:
    listing = [docs.documents, docs.to_delete, status_line]
    docs.upload_button.click(partial(upload, service, settings), docs.files, [docs.upload_results, *listing],
                             api_name="upload", concurrency_limit=1, concurrency_id="ingest")
    docs.delete_button.click(partial(delete, service), docs.to_delete, [docs.delete_message, *listing],
                             api_name=False, concurrency_limit=1, concurrency_id="ingest")
    docs.refresh_button.click(lambda: documents_view(service), None, listing, api_name=False)
