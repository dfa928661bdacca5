"""Files → chunks → store, one file at a time, each file all-or-nothing.

A file that fails is reported with its reason and leaves nothing behind; the other files of the
same call are still ingested. A file already in the registry (same bytes) is left as it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ingest.errors import IngestError
from ingest.formats import SUPPORTED_SUFFIXES, expected_types, reader_for
from ingest.progress import EMBEDDING, ProgressFn
from retriever.chunks import new_document
from retriever.registry import DocumentRecord
from retriever.store import KnowledgeStore

DEFAULT_MAX_BYTES = 200 * 1024 * 1024

ADDED, UNCHANGED, FAILED = "added", "unchanged", "failed"


@dataclass(frozen=True)
class IngestOptions:
    max_bytes: int = DEFAULT_MAX_BYTES
    """Files larger than this are refused before they are read."""


@dataclass(frozen=True)
class IngestResult:
    path: Path
    status: str
    document: DocumentRecord | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != FAILED

    def message(self) -> str:
        doc = self.document
        if self.status == FAILED:
            return f"failed    {self.error}"
        if self.status == UNCHANGED:
            return f"unchanged {self.path.name}: already present as {doc.id}"
        parts = [f"{doc.faq_pairs} FAQ pairs"] if doc.faq_pairs else []
        parts += [f"{doc.passages} passages"] if doc.passages else []
        parts += [f"{doc.rows} rows"] if doc.rows else []
        ocr = f" (OCR on pages {doc.ocr_pages})" if doc.ocr_pages else ""
        return f"added     {self.path.name}: {', '.join(parts)} as {doc.id}{ocr}"


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Folders stand for the supported files inside them."""
    expanded: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            expanded += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES)
        else:
            expanded.append(path)
    return expanded


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_file(path: Path, options: IngestOptions) -> None:
    if not path.exists():
        raise IngestError(path, "no such file")
    if not path.is_file():
        raise IngestError(path, "not a regular file")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise IngestError(
            path, f"unsupported file type '{path.suffix or '(none)'}' (expected {expected_types()})"
        )
    size = path.stat().st_size
    if size > options.max_bytes:
        raise IngestError(
            path, f"file is {size / 2**20:.1f} MiB, over the {options.max_bytes / 2**20:.0f} MiB limit"
        )


def ingest_file(
    store: KnowledgeStore, path: Path, options: IngestOptions = IngestOptions(),
    progress: ProgressFn | None = None,
) -> IngestResult:
    try:
        _check_file(path, options)
        sha256 = file_sha256(path)
        existing = store.find(sha256=sha256)
        if existing is not None:
            return IngestResult(path, UNCHANGED, existing)
        found = reader_for(path.suffix)(path, progress)
        if not found.chunks:
            raise IngestError(path, "no questions, answers or text found")
        document = new_document(path.name, sha256, found.pages, found.chunks, found.ocr_pages)
        store.add_document(
            document, found.chunks, progress and (lambda done, total: progress(EMBEDDING, done, total))
        )
        return IngestResult(path, ADDED, document)
    except IngestError as error:
        return IngestResult(path, FAILED, error=str(error))


def ingest_paths(
    store: KnowledgeStore, paths: Iterable[str | Path], options: IngestOptions = IngestOptions(),
    progress_for: Callable[[Path], ProgressFn | None] | None = None,
) -> list[IngestResult]:
    """Ingest every file; `progress_for(path)` gives the progress callback for that file."""
    return [
        ingest_file(store, path, options, progress_for(path) if progress_for else None)
        for path in expand_paths(paths)
    ]
