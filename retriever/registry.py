"""The document registry: which documents the knowledge base holds, and which collection is active.

`DocumentRegistry` is what the store (store.py) needs of one; there are two. An embedded knowledge
base keeps `SqliteRegistry` (this module) under its home; one on a Chroma server keeps
`ChromaRegistry` (chroma_registry.py) on that server, so every process using the server shares it.

`SqliteRegistry`: one SQLite file under the home (`registry.sqlite`), two tables:
- `documents`: one row per document, the columns of `DocumentRecord` (defined once, there) plus a
  status: "ingesting" while its chunks are written, "ready" once they all are. Only ready documents
  are listed or found; what is left "ingesting" belongs to an interrupted ingest and is removed.
- `meta`: the active Chroma collection's name, and a generation number that grows with every change
  of content (caches built on the chunks key on it).

A field added to `DocumentRecord` later must have a default: a registry made before it gets the column
on open (ALTER TABLE ... ADD COLUMN with that default), so homes built by older versions keep working.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import MISSING, Field, astuple, dataclass, fields
from pathlib import Path
from typing import Protocol

INGESTING, READY = "ingesting", "ready"
ACTIVE_COLLECTION_KEY = "collection"
GENERATION_KEY = "generation"


@dataclass(frozen=True)
class DocumentRecord:
    """A document in the knowledge base: what `docs`, the page and the API list."""

    id: str
    name: str
    sha256: str
    pages: int
    chunks: int
    faq_pairs: int
    passages: int
    rows: int
    added_at: float
    ocr_pages: str = ""
    """Pages read by OCR (scanned pages), as ranges: "2, 4" or "1-100"; "" when none were."""


class DocumentRegistry(Protocol):
    """The documents of one knowledge base and the name of its active collection.

    A document is recorded by `begin` before its chunks are written and listed or found only after
    `ready`; `forget` drops it. `generation` changes with every change of content (caches built on
    the chunks key on it).
    """

    def documents(self) -> list[DocumentRecord]: ...
    def find(self, *, doc_id: str | None = None, sha256: str | None = None) -> DocumentRecord | None: ...
    def unfinished(self, begun_before: float | None = None) -> list[str]: ...
    def begin(self, doc: DocumentRecord) -> None: ...
    def ready(self, doc_id: str) -> None: ...
    def forget(self, doc_id: str) -> None: ...
    def active_collection(self, default: str) -> str: ...
    def activate(self, collection: str) -> None: ...
    @property
    def generation(self) -> int: ...
    def close(self) -> None: ...


_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", "str": "TEXT", "int": "INTEGER", "float": "REAL"}
_COLUMNS = [f.name for f in fields(DocumentRecord)]


def _column(f: Field) -> str:
    definition = f"{f.name} {_SQL_TYPES[f.type]} NOT NULL"
    if f.default is not MISSING:
        definition += f" DEFAULT {_sql_literal(f.default)}"
    return definition + (" PRIMARY KEY" if f.name == "id" else "") + (" UNIQUE" if f.name == "sha256" else "")


def _sql_literal(value: str | int | float) -> str:
    return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else repr(value)


def _schema() -> str:
    columns = ", ".join(_column(f) for f in fields(DocumentRecord))
    return (f"CREATE TABLE IF NOT EXISTS documents ({columns}, status TEXT NOT NULL);\n"
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Columns of fields added since the table was made (older homes), with their defaults."""
    present = {row[1] for row in db.execute("PRAGMA table_info(documents)")}
    with db:
        for f in fields(DocumentRecord):
            if f.name not in present:
                db.execute(f"ALTER TABLE documents ADD COLUMN {_column(f)}")


class SqliteRegistry:
    """The SQLite registry of one home; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path):
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.executescript(_schema())
        _add_missing_columns(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- documents -----------------------------------------------------------------------------

    def documents(self) -> list[DocumentRecord]:
        return self._select(f"WHERE status = '{READY}' ORDER BY added_at")

    def find(self, *, doc_id: str | None = None, sha256: str | None = None) -> DocumentRecord | None:
        column, value = ("id", doc_id) if doc_id is not None else ("sha256", sha256)
        found = self._select(f"WHERE {column} = ? AND status = '{READY}'", (value,))
        return found[0] if found else None

    def unfinished(self, begun_before: float | None = None) -> list[str]:
        """Ids of documents not ready: left by an interrupted ingest (or, with `begun_before`, only
        those whose ingest began before that time)."""
        query, parameters = f"SELECT id FROM documents WHERE status != '{READY}'", ()
        if begun_before is not None:
            query, parameters = query + " AND added_at < ?", (begun_before,)
        with self._lock:
            return [row[0] for row in self._db.execute(query, parameters)]

    def begin(self, doc: DocumentRecord) -> None:
        """Record a document whose chunks are about to be written (not listed until `ready`)."""
        with self._lock, self._db:
            self._db.execute(f"INSERT INTO documents({', '.join(_COLUMNS)}, status) "
                             f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})", (*astuple(doc), INGESTING))

    def ready(self, doc_id: str) -> None:
        with self._lock, self._db:
            self._db.execute(f"UPDATE documents SET status = '{READY}' WHERE id = ?", (doc_id,))
            self._bump_generation()

    def forget(self, doc_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
            self._bump_generation()

    def _select(self, where: str, parameters: tuple = ()) -> list[DocumentRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM documents {where}", parameters).fetchall()
        return [DocumentRecord(*row) for row in rows]

    # -- meta ------------------------------------------------------------------------------------

    def active_collection(self, default: str) -> str:
        return self._meta(ACTIVE_COLLECTION_KEY) or default

    def activate(self, collection: str) -> None:
        """Name the active collection; one transaction with the generation bump, so a crash keeps
        either the old collection or the new one."""
        with self._lock, self._db:
            self._set_meta(ACTIVE_COLLECTION_KEY, collection)
            self._bump_generation()

    @property
    def generation(self) -> int:
        return int(self._meta(GENERATION_KEY) or 0)

    def _bump_generation(self) -> None:
        self._set_meta(GENERATION_KEY, str(self.generation + 1))

    def _meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


__all__ = ["INGESTING", "READY", "DocumentRecord", "DocumentRegistry", "SqliteRegistry"]
