"""`AgentHelper`: where a ticket becomes an answer. The command line, the page and the REST API share it.

It holds the knowledge store, the retriever and the judge (loaded on first use, once per process and
model configuration: app/judges.py), and logs every answer to the feedback database so agents can
rate it (app/feedback.py). No web framework is imported here.

    service = AgentHelper(home)
    for item in service.ask_stream(ticket):
        if isinstance(item, str): print(item, end="")   # reasoning as it is written …
        else: answer = item                              # … then an Answer (a Verdict + answer_id)

Concurrency: any number of threads may call it. Retrieval is serialised (its BM25 index is rebuilt
lazily), ingest and delete are serialised against each other, and concurrent questions are judged
together in batches of at most `max_batch` (app/batching.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from app.feedback import FeedbackRecord, FeedbackStore
from app.home import Home, open_store
from app.judges import SearchEmbedder, SharedJudge, default_model_config, loaded_judge, shared_judge
from app.uploads import Uploads
from ingest.formats import SUPPORTED_SUFFIXES
from ingest.pipeline import IngestOptions, IngestResult, ProgressFn, ingest_paths
from reasoner.backends import EMBEDDED, EMBEDDED_MODEL_NAME, ModelConfig
from reasoner.judge import Judge, JudgeConfig
from reasoner.verdict import Verdict, VerdictJSON
from retriever.candidates import Candidate
from retriever.escalation import KnowledgeFloor
from retriever.reindex import ReindexResult, reindex
from retriever.registry import DocumentRecord
from retriever.store import KnowledgeStore

MAX_TICKET_CHARS = 20_000
"""Longest ticket the page and the API accept (the judge's prompt shows at most its first
reasoner.prompt.MAX_PROMPT_TICKET_CHARS)."""


@dataclass
class AnswerJSON(VerdictJSON):
    """The `ask --json` object plus the id feedback refers to (the REST API's match response)."""

    answer_id: str | None = None
    """Refer to it in POST /api/v1/feedback; None when the answer was not logged."""


@dataclass
class Answer(Verdict):
    """A Verdict as the service gives it: plus the ticket, the candidates retrieved, and the id
    under which it was logged (None when not logged), which feedback refers to."""

    ticket: str = ""
    retrieved: list[Candidate] = field(default_factory=list)
    answer_id: str | None = None

    @classmethod
    def of(cls, verdict: Verdict, ticket: str, retrieved: list[Candidate], answer_id: str | None) -> "Answer":
        values = {f.name: getattr(verdict, f.name) for f in fields(Verdict)}
        return cls(**values, ticket=ticket, retrieved=list(retrieved), answer_id=answer_id)

    def to_json(self) -> AnswerJSON:
        """The `ask --json` object plus `answer_id` (what `POST /api/v1/feedback` refers to)."""
        return AnswerJSON(**vars(super().to_json()), answer_id=self.answer_id)


class AgentHelper:
    def __init__(
        self,
        home: Home,
        model_config: ModelConfig | None = None,
        judge_config: JudgeConfig | None = None,
        ingest_options: IngestOptions = IngestOptions(),
        *,
        log_answers: bool = True,
        max_batch: int = 8,
        store: KnowledgeStore | None = None,
    ):
        """`model_config` None = `default_model_config(home.models)`; `judge_config` None = the
        adapter's calibrated values (JudgeConfig.from_metadata) with the search embedder's
        `escalate_below`. The search embedder is `home.embedder_adapter`; a knowledge base built
        with another one raises StoreError (`reindex` it). `log_answers` records every answer in
        `home.feedback_db` so it can be rated. `store` reuses an open store of the same home. With
        `home.chroma_server` the knowledge base is the server's (shared with other processes)."""
        from retriever.hybrid import HybridRetriever
        from retriever.reranker import shipped_reranker

        self.home = home
        self.model_config = model_config if model_config is not None else default_model_config(home.models)
        self.judge_config = judge_config
        self.ingest_options = ingest_options
        self.max_batch = max_batch
        self.store = store if store is not None else open_store(home)
        self.retriever = HybridRetriever(self.store, reranker=shipped_reranker())
        self.feedback = FeedbackStore(home.feedback_db)
        self.log_answers = log_answers
        self._search_lock = threading.Lock()
        self._warming = False
        self._write_lock = threading.Lock()
        self._uploads = Uploads(home.uploads, self.store, self._write_lock, ingest_options.max_bytes)

    # -- the judge ------------------------------------------------------------------------------------

    def _search_embedder(self, floor: KnowledgeFloor | None = None) -> SearchEmbedder:
        """What the judge's calibration depends on; `floor` where the caller has read it already (a
        request to the server in Chroma-server mode)."""
        floor = floor if floor is not None else self.knowledge_floor()
        return SearchEmbedder.of(self.store.embedder, floor.similarity)

    def knowledge_floor(self) -> KnowledgeFloor:
        """The knowledge base's own escalation floor where it is FAQ-style (retriever/escalation.py)."""
        with self._search_lock:
            return self.retriever.knowledge_floor()

    @property
    def model_loaded(self) -> bool:
        return self._loaded() is not None

    def _loaded(self, floor: KnowledgeFloor | None = None) -> SharedJudge | None:
        return loaded_judge(self.model_config, self.judge_config, self._search_embedder(floor))

    def _shared(self) -> SharedJudge:
        return shared_judge(self.model_config, self.judge_config, self.max_batch, self._search_embedder())

    @property
    def judge(self) -> Judge:
        """The judge, loaded on first use (seconds; the first load of the embedded model ~15 s)."""
        return self._shared().judge

    def warm_up(self) -> None:
        """Make the first answer as fast as the rest (the server runs this in the background when it
        starts): load the model and run it once, load the embedder and build the search index."""
        self._warming = True
        try:
            shared = self._shared()
            tie = [Candidate(f"warm-up {i}", "warm-up", "warm-up", None, "warm-up", None, 0.5) for i in (1, 2)]
            shared.judge.decide("warm-up", tie)  # a tie: the judge is asked (unless weighted out), so its first run is done
            self.search("warm-up")
        finally:
            self._warming = False

    # -- asking -----------------------------------------------------------------------------------

    def search(self, ticket: str, k: int | None = None, rerank: bool = True) -> list[Candidate]:
        k = k or self.judge.config.top_k  # outside the lock: the judge's calibration reads the knowledge floor
        with self._search_lock:
            return self.retriever.search(ticket, k=k, rerank=rerank)

    def retrieval_stages(self) -> list[tuple[str, Callable[[str, int], list[Candidate]]]]:
        """The retrieval stages in pipeline order, (name, search): what `eval` scores one by one."""
        if self.retriever.reranker is None:
            return [("retriever", self.search)]
        return [("retriever", lambda ticket, k: self.search(ticket, k, rerank=False)), ("+ reranker", self.search)]

    def ask_stream(self, ticket: str, *, record: bool | None = None) -> Iterator[str | Answer]:
        """Reasoning pieces (str) as the judge writes them, then one Answer (a Verdict).

        Retrieves the judge's top_k candidates, then runs the judge. ValueError for an empty ticket.
        The answer is logged for feedback unless `record` (default: `log_answers`) is false.
        """
        if not isinstance(ticket, str) or not ticket.strip():
            raise ValueError("the ticket is empty")
        shared = self._shared()
        candidates = self.search(ticket, shared.judge.config.top_k)
        verdict = None
        for item in shared.batcher.stream(ticket, candidates):
            if isinstance(item, Verdict):
                verdict = item
            else:
                yield item
        assert verdict is not None, "the judge gave no verdict"
        answer_id = None
        if self.log_answers if record is None else record:
            answer_id = self.feedback.record_answer(
                ticket, [c.to_dict() for c in candidates], verdict.to_json_dict(), verdict.model
            )
        yield Answer.of(verdict, ticket, candidates, answer_id)

    def ask(self, ticket: str, *, record: bool | None = None) -> Answer:
        """The verdict on one ticket (an Answer, which is a Verdict with `answer_id`)."""
        answer = None
        for item in self.ask_stream(ticket, record=record):
            if isinstance(item, Answer):
                answer = item
        assert answer is not None
        return answer

    def give_feedback(self, answer_id: str, rating: str | None = None,
                      correct_id: str | None = None) -> FeedbackRecord:
        """👍/👎 and/or the right candidate's id ("none": should have escalated); see FeedbackStore.give."""
        return self.feedback.give(answer_id, rating, correct_id)

    # -- knowledge base ---------------------------------------------------------------------------

    def ingest(
        self, paths: Iterable[str | Path],
        progress_for: Callable[[Path], ProgressFn | None] | None = None,
    ) -> list[IngestResult]:
        """Ingest files or folders as the CLI does (each file all-or-nothing)."""
        with self._write_lock:
            return ingest_paths(self.store, paths, self.ingest_options, progress_for)

    def upload(
        self, filename: str, source: BinaryIO | str | Path,
        allowed_suffixes: Iterable[str] = SUPPORTED_SUFFIXES, progress: ProgressFn | None = None,
        max_bytes: int | None = None,
    ) -> IngestResult:
        """Store one uploaded file under `home/uploads/` and ingest it; never raises for a bad file
        (app/uploads.py)."""
        return self._uploads.add(filename, source, allowed_suffixes, progress, max_bytes)

    @property
    def uploads(self) -> Path:
        """Where uploaded files are kept (`<home>/uploads/<document id>/<name>`)."""
        return self.home.uploads

    def documents(self) -> list[DocumentRecord]:
        return self.store.documents()

    def reindex(self, progress: Callable[[int, int], None] | None = None, *,
                force: bool = False) -> ReindexResult:
        """Re-embed every chunk with this service's embedder (retriever.reindex): searches keep
        being answered from the old collection until the new one is complete and swapped in.
        Uploads and deletes meanwhile raise StoreError ("a re-index is running")."""
        return reindex(self.store, force=force, progress=progress)

    def delete(self, doc_id: str) -> DocumentRecord:
        """Remove a document, its chunks and its uploaded file; KeyError if there is no such id."""
        with self._write_lock:
            doc = self.store.delete_document(doc_id)
            self._uploads.remove(doc.id)
            return doc

    # -- status -----------------------------------------------------------------------------------

    def status(self) -> dict:
        """What the status line shows: model, adapter, backend, documents, chunks, and the knowledge
        base's own escalation floor where it has one."""
        floor = self.knowledge_floor()
        shared = self._loaded(floor)
        config = self.model_config
        info = shared.judge.loaded.info if shared is not None else None
        base = info.base if info else config.base
        adapter = info.adapter if info else (str(config.adapter) if config.adapter is not None else None)
        return {
            "model": EMBEDDED_MODEL_NAME if base == EMBEDDED else base,
            "adapter": adapter,
            "backend": info and info.backend,
            "device": info and info.device,
            "dtype": info and info.dtype,
            "prompt_version": info and info.prompt_version,
            "model_loaded": shared is not None,
            "judge_weight": shared.judge.config.judge_weight if shared is not None else None,
            "warming_up": self._warming,
            "documents": len(self.documents()),
            "chunks": self.store.count(),
            "embedder": self.store.embedder.name,
            "knowledge_floor": floor.similarity,
            "faq_entries": floor.faq_entries,
        }

    def status_line(self) -> str:
        s = self.status()
        adapter = f" + adapter {Path(s['adapter']).name}" if s["adapter"] else " (no adapter)"
        if self._warming:
            backend = " (warming up: loading the model…)"
        elif s["model_loaded"]:
            backend = f" [{', '.join(str(s[k]) for k in ('backend', 'device', 'dtype') if s[k])}] · ready"
            if s["judge_weight"] == 0:
                backend += " · weighted out by its calibration: the retriever decides"
        else:
            backend = " (loads on first question)"
        floor = (f" · escalates below {s['knowledge_floor']:.2f} (derived from its {s['faq_entries']} FAQ entries)"
                 if s["knowledge_floor"] is not None else "")
        return (f"Model: {s['model']}{adapter}{backend} · {s['documents']} documents · {s['chunks']} "
                f"chunks · embedder {s['embedder']}{floor}")


__all__ = ["MAX_TICKET_CHARS", "AgentHelper", "Answer", "AnswerJSON"]
