"""`AgentHelper`: the one object the command line, the web page and the REST API share.

It holds the knowledge store, the retriever and the judge (loaded on first use, once per process and
model configuration), and logs every answer to the feedback database so agents can rate it.
No web framework is imported here: the CLI uses this module too.

    service = AgentHelper(home, ModelConfig(cache_dir=home.models))
    for item in service.ask_stream(ticket):
        if isinstance(item, str): print(item, end="")   # reasoning as it is written …
        else: answer = item                              # … then an Answer (a Verdict + answer_id)

Concurrency: any number of threads may call it. Retrieval is serialised (its BM25 index is rebuilt
lazily), ingest and delete are serialised against each other, and at most `judge_slots` generations
run at once per loaded model (1 by default: on a CPU, parallel decoding only slows every request).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from ingest.pipeline import (
    ADDED, FAILED, SUPPORTED_SUFFIXES, UNCHANGED, IngestOptions, IngestResult, ProgressFn, ingest_file,
    ingest_paths,
)
from reasoner.backends import EMBEDDED, EMBEDDED_MODEL_NAME, ModelConfig, default_adapter_path
from reasoner.judge import Judge, JudgeConfig, Verdict
from retriever.candidates import Candidate
from retriever.reindex import ReindexResult, reindex
from retriever.store import DocumentRecord, KnowledgeStore
from ui.feedback import FeedbackRecord, FeedbackStore
from ui.home import Home, load_embedder

UPLOADS = "uploads"
MAX_NAME_CHARS = 120
_COPY_BLOCK = 1 << 20


class UploadRejected(ValueError):
    """An upload refused before ingest (name, type or size); the message is for the user."""


def default_model_config(home: Home, base: str = EMBEDDED, adapter: Path | None = None,
                         dtype: str = "auto") -> ModelConfig:
    """The embedded model (with the shipped adapter when there is one), cached under `home/models`."""
    return ModelConfig(base=base, adapter=adapter if adapter is not None else default_adapter_path(),
                       cache_dir=home.models, dtype=dtype)


# -- one judge per process and configuration ----------------------------------------------------


@dataclass
class _SharedJudge:
    judge: Judge
    slots: threading.Semaphore


_JUDGES: dict[tuple, _SharedJudge] = {}
_LOADING = threading.Lock()
"""Serialises loads only: reading _JUDGES (status lines) never waits for a load in progress."""


@dataclass(frozen=True)
class SearchEmbedder:
    """What the judge's calibration depends on in the embedder that found the candidates."""

    hash: str | None = None
    """Picks the adapter's calibration made with this embedder's similarities, when it has one."""
    escalate_below: float | None = None
    """Nothing this close: escalate without asking the model."""


def _judge_key(model_config: ModelConfig, judge_config: JudgeConfig | None, embedder: SearchEmbedder) -> tuple:
    # Without an explicit judge config the judge is calibrated for the embedder: part of the key.
    return (model_config, judge_config, embedder if judge_config is None else None)


def _shared_judge(model_config: ModelConfig, judge_config: JudgeConfig | None, slots: int,
                  embedder: SearchEmbedder = SearchEmbedder()) -> _SharedJudge:
    """Load the model once per process: services over different homes share it (tests, too).

    `judge_config` None = the adapter's values calibrated for the search embedder, with its
    `escalate_below`."""
    key = _judge_key(model_config, judge_config, embedder)
    shared = _JUDGES.get(key)
    if shared is not None:
        return shared
    from reasoner.backends import load_model

    with _LOADING:  # concurrent first requests wait for one load
        shared = _JUDGES.get(key)
        if shared is None:
            # Another judge config over the same model reuses its weights and generation slots.
            same_model = next((s for k, s in _JUDGES.items() if k[0] == model_config), None)
            loaded = same_model.judge.loaded if same_model else load_model(model_config)
            if judge_config is None:
                judge_config = JudgeConfig.from_metadata(loaded.adapter_metadata, embedder_hash=embedder.hash,
                                                         escalate_below=embedder.escalate_below)
            slots_held = same_model.slots if same_model else threading.BoundedSemaphore(max(1, slots))
            shared = _JUDGES[key] = _SharedJudge(Judge(loaded, judge_config), slots_held)
        return shared


def _loaded_judge(model_config: ModelConfig, judge_config: JudgeConfig | None,
                  embedder: SearchEmbedder = SearchEmbedder()) -> _SharedJudge | None:
    return _JUDGES.get(_judge_key(model_config, judge_config, embedder))


# -- answers ----------------------------------------------------------------------------------------


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

    def to_json_dict(self) -> dict:
        """The `ask --json` object plus `answer_id` (what `POST /api/v1/feedback` refers to)."""
        return {**super().to_json_dict(), "answer_id": self.answer_id}


# -- uploads ------------------------------------------------------------------------------------------


def sanitize_filename(name: str, allowed_suffixes: Iterable[str] = SUPPORTED_SUFFIXES) -> str:
    """A safe base name for an uploaded file, or UploadRejected.

    Directory parts (either slash) are dropped, characters other than letters, digits, space, dot,
    dash and underscore become "_", leading dots and spaces go, and the suffix must be allowed.
    """
    allowed = tuple(s.lower() for s in allowed_suffixes)
    shown = name if len(name) <= 80 else name[:77] + "..."
    base = unicodedata.normalize("NFKC", str(name)).replace("\\", "/").split("/")[-1]
    base = re.sub(r"[^\w .-]+", "_", base, flags=re.ASCII)
    base = re.sub(r"\.{2,}", ".", base).strip(" .")
    suffix = Path(base).suffix.lower()
    if not base or not Path(base).stem.strip(" ._"):
        raise UploadRejected(f"{shown!r}: not a usable file name")
    if suffix not in allowed:
        raise UploadRejected(
            f"{Path(base).name}: unsupported file type '{suffix or '(none)'}' "
            f"(expected {', '.join(allowed)})"
        )
    stem = Path(base).stem[: MAX_NAME_CHARS - len(suffix)].rstrip(" .")
    return stem + suffix


def _rejected(name: str, reason: str) -> IngestResult:
    return IngestResult(Path(name or "upload"), FAILED, error=reason)


class AgentHelper:
    def __init__(
        self,
        home: Home,
        model_config: ModelConfig | None = None,
        judge_config: JudgeConfig | None = None,
        ingest_options: IngestOptions = IngestOptions(),
        *,
        log_answers: bool = True,
        judge_slots: int = 1,
        store: KnowledgeStore | None = None,
    ):
        """`model_config` None = `default_model_config(home)`; `judge_config` None = the adapter's
        calibrated values (JudgeConfig.from_metadata) with the search embedder's `escalate_below`.
        The search embedder is `home.embedder_adapter` (the shipped adapter unless the Home says
        otherwise); a knowledge base built with another one raises StoreError (`reindex` it).
        `log_answers` records every answer in `home.feedback_db` so it can be rated. `store`
        reuses an open store of the same home."""
        from retriever.hybrid import HybridRetriever

        self.home = home
        self.model_config = model_config if model_config is not None else default_model_config(home)
        self.judge_config = judge_config
        self.ingest_options = ingest_options
        self.judge_slots = judge_slots
        self.store = store if store is not None else KnowledgeStore(home.root, load_embedder(home))
        self.retriever = HybridRetriever(self.store)
        self.feedback = FeedbackStore(home.feedback_db)
        self.log_answers = log_answers
        self._search_lock = threading.Lock()
        self._write_lock = threading.Lock()

    # -- the judge ------------------------------------------------------------------------------------

    @property
    def _search_embedder(self) -> SearchEmbedder:
        embedder = self.store.embedder
        return SearchEmbedder(getattr(embedder, "hash", None), getattr(embedder, "escalate_below", None))

    @property
    def model_loaded(self) -> bool:
        return self._loaded() is not None

    def _loaded(self) -> _SharedJudge | None:
        return _loaded_judge(self.model_config, self.judge_config, self._search_embedder)

    def _shared(self) -> _SharedJudge:
        return _shared_judge(self.model_config, self.judge_config, self.judge_slots, self._search_embedder)

    @property
    def judge(self) -> Judge:
        """The judge, loaded on first use (seconds; the first load of the embedded model ~15 s)."""
        return self._shared().judge

    def warm_up(self) -> None:
        """Load the model now (e.g. in a background thread when the server starts)."""
        self._shared()

    # -- asking -----------------------------------------------------------------------------------

    def search(self, ticket: str, k: int | None = None) -> list[Candidate]:
        with self._search_lock:
            return self.retriever.search(ticket, k=k or self.judge.config.top_k)

    def ask_stream(self, ticket: str, *, record: bool | None = None) -> Iterator[str | Answer]:
        """Reasoning pieces (str) as the judge writes them, then one Answer (a Verdict).

        Retrieves the judge's top_k candidates, then runs the judge. ValueError for an empty ticket.
        The answer is logged for feedback unless `record` (default: `log_answers`) is false.
        """
        if not isinstance(ticket, str) or not ticket.strip():
            raise ValueError("the ticket is empty")
        shared = self._shared()
        candidates = self.search(ticket, shared.judge.config.top_k)
        with shared.slots:  # released also when the consumer stops early (generator closed)
            verdict = None
            for item in shared.judge.stream(ticket, candidates):
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

    @property
    def uploads(self) -> Path:
        return self.home.root / UPLOADS

    def upload(
        self, filename: str, source: BinaryIO | str | Path,
        allowed_suffixes: Iterable[str] = SUPPORTED_SUFFIXES, progress: ProgressFn | None = None,
        max_bytes: int | None = None,
    ) -> IngestResult:
        """Store one uploaded file under `home/uploads/` and ingest it; never raises for a bad file.

        `filename` is what the client called it (only its sanitised base name is used); `source` is a
        binary stream or a local file (e.g. Gradio's temporary copy). Size over `max_bytes` (default
        `ingest_options.max_bytes`),
        a disallowed suffix or a bad name give a FAILED result with the reason. An added document's file
        is kept as `uploads/<document id>/<name>`; anything else is removed again.
        """
        try:
            name = sanitize_filename(filename, allowed_suffixes)
        except UploadRejected as error:
            return _rejected(Path(str(filename).replace("\\", "/")).name, str(error))
        self.uploads.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.uploads))
        try:
            target = incoming / name
            if not _inside(target, self.uploads):
                return _rejected(name, f"{name}: not a usable file name")
            limit = self.ingest_options.max_bytes if max_bytes is None else max_bytes
            options = IngestOptions(max_bytes=limit)
            size = _copy_limited(source, target, limit)
            if size > limit:
                return _rejected(name, f"{name}: file is over the {limit / 2**20:g} MiB limit")
            if size == 0:
                return _rejected(name, f"{name}: the file is empty")
            with self._write_lock:
                result = ingest_file(self.store, target, options, progress)
                if result.status == ADDED:
                    final = self.uploads / result.document.id
                    shutil.rmtree(final, ignore_errors=True)
                    incoming.rename(final)
                    result = IngestResult(final / name, ADDED, result.document)
            if result.status == ADDED:
                return result
            return IngestResult(Path(name), result.status, result.document, result.error)
        except OSError as error:
            return _rejected(name, f"{name}: could not store the upload ({error.strerror or error})")
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

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
            folder = self.uploads / doc.id
            if _inside(folder, self.uploads):
                shutil.rmtree(folder, ignore_errors=True)
            return doc

    # -- status -----------------------------------------------------------------------------------

    def status(self) -> dict:
        """What the status line shows: model, adapter, backend, documents and chunks."""
        shared = self._loaded()
        config = self.model_config
        if shared is not None:
            info = shared.judge.loaded.info
            model = EMBEDDED_MODEL_NAME if info.base == EMBEDDED else info.base
            adapter, backend, device = info.adapter, info.backend, info.device
            prompt_version, dtype = info.prompt_version, info.dtype
        else:
            model = EMBEDDED_MODEL_NAME if config.base == EMBEDDED else config.base
            adapter = str(config.adapter) if config.adapter is not None else None
            backend, device, prompt_version, dtype = None, None, None, None
        documents = self.documents()
        return {
            "model": model,
            "adapter": adapter,
            "backend": backend,
            "device": device,
            "dtype": dtype,
            "prompt_version": prompt_version,
            "model_loaded": shared is not None,
            "documents": len(documents),
            "chunks": self.store.count(),
            "embedder": self.store.embedder.name,
        }

    def status_line(self) -> str:
        s = self.status()
        adapter = f" + adapter {Path(s['adapter']).name}" if s["adapter"] else " (no adapter)"
        backend = f" [{s['backend']}, {s['device']}, {s['dtype']}]" if s["model_loaded"] else " (loads on first question)"
        return (f"Model: {s['model']}{adapter}{backend} · {s['documents']} documents · {s['chunks']} "
                f"chunks · embedder {s['embedder']}")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _copy_limited(source: BinaryIO | str | Path, target: Path, limit: int) -> int:
    """Copy at most limit + 1 bytes; returns the bytes read (> limit means: too large, stopped)."""
    if isinstance(source, (str, Path)):
        size = Path(source).stat().st_size
        if size > limit:
            return size
        with Path(source).open("rb") as handle:
            return _copy_limited(handle, target, limit)
    total = 0
    with target.open("xb") as out:
        while True:
            block = source.read(_COPY_BLOCK)
            if not block:
                return total
            total += len(block)
            if total > limit:
                return total
            out.write(block)


__all__ = [
    "ADDED", "FAILED", "UNCHANGED", "AgentHelper", "Answer", "UploadRejected", "default_model_config",
    "sanitize_filename",
]
