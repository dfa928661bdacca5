"""The agents' page (Gradio Blocks): ask with streamed reasoning, documents, feedback, status line.

A thin layer over `ui.service.AgentHelper`: every handler calls the service and formats what it
returns. `build_page(service, settings)` gives the Blocks (queue configured); `page_options(settings)`
the keyword arguments that `launch()` or `gr.mount_gradio_app()` take for it (CSS, login, upload cap).

Named API endpoints (for gradio_client; the REST API in ui/api.py is the supported integration):
`/ask` (ticket, history) streams; `/thumbs_up`, `/thumbs_down`, `/correct` (candidate id or "none") rate
the session's latest answer; `/upload` (files); `/status`.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from ui.feedback import DOWN, NONE_ID, UP, FeedbackError
from ui.service import AgentHelper, Answer

if TYPE_CHECKING:
    from ui.server import ServerSettings

TITLE = "agent-helper"
STREAM_INTERVAL_S = 0.08
"""At most this often a streamed chat update is sent (each carries the whole conversation)."""
MAX_TICKET_CHARS = 20_000

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
_CANDIDATE_HEADERS = ["#", "question", "similarity", "combined", "source", "id"]
_DOC_HEADERS = ["id", "name", "pages", "chunks", "FAQ pairs", "passages", "rows", "added"]


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


# -- formatting (pure) ----------------------------------------------------------------------------


def _percent(x: float) -> str:
    return f"{100 * x:.0f}%"


def _where(source: str, page: int | None) -> str:
    return f"{source}, page {page}" if page else source


def verdict_banner(answer: Answer) -> str:
    if answer.escalate:
        return ('<div class="verdict escalate">⛔ No match — escalate'
                f'<small>Nothing in the knowledge base answers this ticket '
                f'(confidence {_percent(answer.confidence)}). Hand it to a specialist.</small></div>')
    m = answer.match
    return (f'<div class="verdict match">✅ Match · {_percent(answer.confidence)} confidence'
            f'<small>{_escape(m.question)} — {_escape(_where(m.source, m.page))}</small></div>')


def answer_markdown(answer: Answer) -> str:
    """The chat message that closes an answer."""
    if answer.escalate:
        lines = [f"### ⛔ NO MATCH — ESCALATE\n",
                 f"Nothing in the knowledge base answers this ticket (confidence {_percent(answer.confidence)}). "
                 "Hand it to a specialist."]
        if answer.candidates:
            closest = answer.candidates[0].candidate
            lines.append(f"\nClosest entry (not a match): *{closest.question}* — "
                         f"{_where(closest.source, closest.page)}, similarity {closest.score:.2f}")
    else:
        m = answer.match
        lines = [f"### ✅ Match — {_percent(answer.confidence)} confidence\n",
                 "**Resolution**\n", m.answer, "",
                 f"**Matched FAQ:** {m.question}  ",
                 f"**Source:** {_where(m.source, m.page)}"]
    for note in answer.notes:
        lines.append(f"\n<small>ℹ️ {_escape(note)}</small>")
    return "\n".join(lines)


def answer_details(answer: Answer) -> str:
    if answer.escalate:
        return f"**No match — escalate.** Confidence {_percent(answer.confidence)} · {answer.latency_s:.1f} s"
    m = answer.match
    label = f" · label `{m.label}`" if m.label else ""
    return (f"**Matched FAQ:** {m.question}\n\n**Source:** {_where(m.source, m.page)}{label}\n\n"
            f"**Confidence:** {_percent(answer.confidence)} · {answer.latency_s:.1f} s")


def candidate_rows(answer: Answer) -> list[list]:
    return [
        [s.number, s.candidate.question, f"{s.candidate.score:.2f}", f"{s.combined:.2f}",
         _where(s.candidate.source, s.candidate.page), s.candidate.id]
        for s in answer.candidates
    ]


def correction_choices(answer: Answer) -> list[tuple[str, str]]:
    choices = [(f"{c.id} — {c.question[:90]}", c.id) for c in answer.retrieved]
    return choices + [("none — nothing matches: escalate", NONE_ID)]


def document_rows(service: AgentHelper) -> list[list]:
    return [
        [d.id, d.name, d.pages, d.chunks, d.faq_pairs, d.passages, d.rows,
         time.strftime("%Y-%m-%d %H:%M", time.localtime(d.added_at))]
        for d in service.documents()
    ]


def document_choices(service: AgentHelper) -> list[tuple[str, str]]:
    return [(f"{d.name} ({d.id})", d.id) for d in service.documents()]


def _result_line(result) -> str:
    icon = {"added": "✅", "unchanged": "♻️", "failed": "❌"}.get(result.status, "•")
    return f"{icon} {_escape(result.message().strip())}"


# -- the page ---------------------------------------------------------------------------------------


def build_page(service: AgentHelper, settings: "ServerSettings | None" = None) -> gr.Blocks:
    from ui.server import ServerSettings

    settings = settings or ServerSettings()
    allowed = ", ".join(settings.allowed_suffixes)

    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as page:
        status_line = gr.Markdown(elem_id="status-line")
        answers_map = gr.State({})  # chat message index → answer id (for 👍/👎 on any message)
        last_answer = gr.State(None)  # answer id of the newest answer (feedback panel)

        with gr.Tab("Ask"):
            with gr.Row():
                with gr.Column(scale=3):
                    chat = gr.Chatbot(label="Conversation", height=520, elem_id="chat",
                                      buttons=["copy"], feedback_options=("Like", "Dislike"),
                                      placeholder="Answers, with their reasoning and sources, appear here.")
                    ticket = gr.Textbox(label="Ticket", lines=4, max_length=MAX_TICKET_CHARS,
                                        placeholder="Paste the customer's message here…", elem_id="ticket")
                    with gr.Row():
                        ask_button = gr.Button("Ask", variant="primary", elem_id="ask-button")
                        clear_button = gr.Button("Clear conversation", variant="secondary")
                with gr.Column(scale=2):
                    verdict = gr.HTML(_IDLE, elem_id="verdict")
                    resolution = gr.Textbox(label="Resolution — copy it into your reply", lines=6,
                                            interactive=False, buttons=["copy"], elem_id="resolution")
                    details = gr.Markdown(elem_id="details")
                    with gr.Accordion("Other candidates", open=True):
                        candidates = gr.Dataframe(headers=_CANDIDATE_HEADERS, interactive=False, wrap=True,
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

        with gr.Tab("Documents"):
            files = gr.File(label=f"Knowledge files ({allowed}; several at once)", file_count="multiple",
                            type="filepath", elem_id="upload")
            upload_button = gr.Button("Add to knowledge base", variant="primary", elem_id="upload-button")
            upload_results = gr.Markdown(elem_id="upload-results")
            documents = gr.Dataframe(headers=_DOC_HEADERS, interactive=False, label="Documents",
                                     elem_id="documents")
            with gr.Row():
                to_delete = gr.Dropdown(label="Document", choices=[], interactive=True, scale=3)
                delete_button = gr.Button("Delete document", variant="stop", scale=1)
                refresh_button = gr.Button("Refresh", scale=1)
            delete_message = gr.Markdown()

        # -- handlers ---------------------------------------------------------------------------

        def refresh_status():
            return service.status_line()

        def refresh_documents():
            return document_rows(service), gr.update(choices=document_choices(service), value=None)

        def ask(text: str, history: list | None, mapping: dict | None):
            text = (text or "").strip()
            history = list(history or [])
            mapping = dict(mapping or {})
            if not text:
                raise gr.Error("Paste a ticket first.")
            history.append({"role": "user", "content": text})
            thinking = {"role": "assistant", "content": "…",
                        "metadata": {"title": "🧠 Reasoning", "status": "pending"}}
            history.append(thinking)
            first = _THINKING if service.model_loaded else _LOADING
            yield (history, "", first, gr.update(value="", placeholder=""), "", None,
                   gr.update(choices=[], value=None), mapping, None, "", gr.update())
            pieces: list[str] = []
            answer: Answer | None = None
            sent = 0.0
            for item in service.ask_stream(text):
                if isinstance(item, str):
                    pieces.append(item)
                    now = time.monotonic()
                    if now - sent >= STREAM_INTERVAL_S:
                        sent = now
                        thinking["content"] = "".join(pieces)
                        yield (history, gr.update(), _THINKING, gr.update(), gr.update(), gr.update(),
                               gr.update(), mapping, None, gr.update(), gr.update())
                else:
                    answer = item
            assert answer is not None
            thinking["content"] = answer.reasoning or "".join(pieces) or "(no reasoning written)"
            thinking["metadata"] = {"title": f"🧠 Reasoning ({answer.latency_s:.1f} s)", "status": "done"}
            history.append({"role": "assistant", "content": answer_markdown(answer)})
            if answer.answer_id:
                mapping[str(len(history) - 2)] = answer.answer_id
                mapping[str(len(history) - 1)] = answer.answer_id
            resolution_value = (
                gr.update(value="", placeholder="No match — escalate to a specialist.")
                if answer.escalate else gr.update(value=answer.match.answer, placeholder="")
            )
            yield (history, gr.update(), verdict_banner(answer), resolution_value, answer_details(answer),
                   candidate_rows(answer), gr.update(choices=correction_choices(answer), value=None),
                   mapping, answer.answer_id, "", service.status_line())

        def clear():
            return [], {}, None, _IDLE, gr.update(value="", placeholder=""), "", None, \
                gr.update(choices=[], value=None), ""

        def rate(answer_id: str | None, rating: str | None, correct_id: str | None) -> str:
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

        def on_like(mapping: dict | None, data: gr.LikeData) -> str:
            index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
            answer_id = (mapping or {}).get(str(index))
            if not answer_id:
                return "Rate an answer message (the one with the verdict)."
            liked = data.liked if isinstance(data.liked, bool) else str(data.liked).lower() == "like"
            return rate(answer_id, UP if liked else DOWN, None)

        def upload(paths: list[str] | None, progress=gr.Progress()):
            paths = [p for p in (paths or []) if p]
            if not paths:
                return ("Choose one or more files first.", *refresh_documents(), service.status_line())
            lines: list[str] = []
            total = len(paths)
            for index, path in enumerate(map(Path, paths)):
                name = path.name

                def report(stage: str, done: int, of: int, index=index, name=name) -> None:
                    share = done / of if of else 1.0
                    within = 0.3 * share if stage == "reading" else 0.3 + 0.7 * share
                    progress((index + within) / total, desc=f"{name}: {stage} {done}/{of}")

                progress(index / total, desc=f"{name}: starting")
                result = service.upload(name, path, settings.allowed_suffixes, report, settings.max_upload_bytes)
                lines.append(_result_line(result))
            progress(1.0, desc="done")
            return ("\n\n".join(lines), *refresh_documents(), service.status_line())

        def delete(doc_id: str | None):
            if not doc_id:
                return ("Choose a document first.", *refresh_documents(), service.status_line())
            try:
                doc = service.delete(doc_id)
                message = f"🗑️ Deleted {_escape(doc.name)} ({doc.chunks} chunks)."
            except KeyError:
                message = f"❌ No document with id {_escape(doc_id)} (already deleted?)."
            return (message, *refresh_documents(), service.status_line())

        # -- wiring -----------------------------------------------------------------------------

        ask_outputs = [chat, ticket, verdict, resolution, details, candidates, correct, answers_map,
                       last_answer, feedback_message, status_line]
        gr.on([ask_button.click, ticket.submit], ask, [ticket, chat, answers_map], ask_outputs, api_name="ask",
              concurrency_limit=settings.chat_concurrency, concurrency_id="ask", show_progress="minimal")
        clear_button.click(clear, None, [chat, answers_map, last_answer, verdict, resolution, details, candidates,
                                         correct, feedback_message], api_name=False, queue=False)
        up_button.click(lambda a: rate(a, UP, None), last_answer, feedback_message, api_name="thumbs_up")
        down_button.click(lambda a: rate(a, DOWN, None), last_answer, feedback_message, api_name="thumbs_down")
        correct_button.click(lambda a, c: rate(a, None, c), [last_answer, correct], feedback_message,
                             api_name="correct")
        chat.like(on_like, answers_map, feedback_message, api_name=False)
        upload_button.click(upload, files, [upload_results, documents, to_delete, status_line],
                            api_name="upload", concurrency_limit=1, concurrency_id="ingest")
        delete_button.click(delete, to_delete, [delete_message, documents, to_delete, status_line],
                            api_name=False, concurrency_limit=1, concurrency_id="ingest")
        refresh_button.click(lambda: (*refresh_documents(), service.status_line()), None,
                             [documents, to_delete, status_line], api_name=False)
        page.load(lambda: (service.status_line(), *refresh_documents()), None,
                  [status_line, documents, to_delete], api_name="status")

    page.queue(default_concurrency_limit=settings.queue_concurrency, max_size=settings.max_queue)
    return page
