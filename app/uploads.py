"""Files agents upload (page or API): a safe name, a size cap, then ingest; kept per document.

An added document's file is kept as `<home>/uploads/<document id>/<name>`; anything refused or failed
is removed again. Nothing here raises for a bad file: the result says why it was refused.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

from ingest.formats import SUPPORTED_SUFFIXES
from ingest.pipeline import ADDED, FAILED, IngestOptions, IngestResult, ProgressFn, ingest_file
from retriever.store import KnowledgeStore

MAX_NAME_CHARS = 120
_COPY_BLOCK = 1 << 20


class UploadRejected(ValueError):
    """An upload refused before ingest (name, type or size); the message is for the user."""


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


@dataclass
class Uploads:
    """The uploads folder of one home, writing through `store` under the service's `write_lock`."""

    root: Path
    store: KnowledgeStore
    write_lock: threading.Lock
    max_bytes: int

    def add(self, filename: str, source: BinaryIO | str | Path,
            allowed_suffixes: Iterable[str] = SUPPORTED_SUFFIXES, progress: ProgressFn | None = None,
            max_bytes: int | None = None) -> IngestResult:
        """Store one uploaded file and ingest it (see the module docstring); `filename` is what the
        client called it (only its sanitised base name is used), `source` a binary stream or a local
        file (e.g. Gradio's temporary copy). Over `max_bytes` (default: this box's), a disallowed
        suffix or a bad name give a FAILED result with the reason."""
        try:
            name = sanitize_filename(filename, allowed_suffixes)
        except UploadRejected as error:
            return _rejected(Path(str(filename).replace("\\", "/")).name, str(error))
        self.root.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            return self._ingest(name, source, incoming, self.max_bytes if max_bytes is None else max_bytes,
                                progress)
        except OSError as error:
            return _rejected(name, f"{name}: could not store the upload ({error.strerror or error})")
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def _ingest(self, name: str, source, incoming: Path, limit: int, progress) -> IngestResult:
        target = incoming / name
        if not inside(target, self.root):
            return _rejected(name, f"{name}: not a usable file name")
        size = _copy_limited(source, target, limit)
        if size > limit:
            return _rejected(name, f"{name}: file is over the {limit / 2**20:g} MiB limit")
        if size == 0:
            return _rejected(name, f"{name}: the file is empty")
        with self.write_lock:
            result = ingest_file(self.store, target, IngestOptions(max_bytes=limit), progress)
            if result.status == ADDED:
                final = self.root / result.document.id
                shutil.rmtree(final, ignore_errors=True)
                incoming.rename(final)
                return IngestResult(final / name, ADDED, result.document)
        return IngestResult(Path(name), result.status, result.document, result.error)

    def remove(self, doc_id: str) -> None:
        """The uploaded file of a deleted document (call under the write lock)."""
        folder = self.root / doc_id
        if inside(folder, self.root):
            shutil.rmtree(folder, ignore_errors=True)


def _rejected(name: str, reason: str) -> IngestResult:
    return IngestResult(Path(name or "upload"), FAILED, error=reason)


def inside(path: Path, root: Path) -> bool:
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


__all__ = ["UploadRejected", "Uploads", "sanitize_filename"]
