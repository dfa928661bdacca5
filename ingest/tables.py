"""Knowledge rows (question, answer, optional id and label) out of CSV and JSONL exports.

A file is taken whole or not at all: a half-ingested ticket export would silently answer from a subset, so
the first bad row rejects the file, with its line number so that the user can fix it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import IngestError
from ingest.textfile import read_utf8

REQUIRED = ("question", "answer")
OPTIONAL = ("id", "label")


@dataclass(frozen=True)
class Row:
    """One knowledge row; `line` is the 1-based line of the file where it starts (the CSV header is line 1)."""

    question: str
    answer: str
    id: str | None
    label: str | None
    line: int


def read_rows(path: str | Path) -> list[Row]:
    """Rows of a .csv or .jsonl file; raises IngestError naming the file, the line and the problem."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise IngestError(path, f"unsupported file type {suffix or '(none)'}; expected .csv or .jsonl")
    text = read_utf8(path, "CSV" if suffix == ".csv" else "JSONL")
    rows = list(_csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(path, text))
    if not rows:
        raise IngestError(path, "no rows (only a header)" if suffix == ".csv" else "no rows")
    return rows


def _csv_rows(path: Path, text: str) -> Iterator[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
        columns = _columns(path, header)
        start = reader.line_num + 1
        for record in reader:
            if any(field.strip() for field in record):
                yield _csv_row(path, record, columns, len(header), start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise IngestError(path, f"malformed CSV near line {reader.line_num} ({exc})") from exc


def _columns(path: Path, header: list[str]) -> dict[str, int]:
    duplicates = sorted({name for name in header if name and header.count(name) > 1})
    if duplicates:
        raise IngestError(path, f"duplicate column(s): {', '.join(duplicates)}")
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        found = ", ".join(name for name in header if name) or "(none)"
        raise IngestError(path, f"missing required column(s): {', '.join(missing)}; found: {found}")
    return {name: header.index(name) for name in REQUIRED + OPTIONAL if name in header}


def _csv_row(path: Path, record: list[str], columns: dict[str, int], width: int, line: int) -> Row:
    if len(record) > width:
        raise IngestError(
            path,
            f"line {line}: {len(record)} fields but the header has {width} (quote fields that contain commas)",
        )
    values = {name: record[index] if index < len(record) else "" for name, index in columns.items()}
    return _row(path, values, line)


def _jsonl_rows(path: Path, text: str) -> Iterator[Row]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise IngestError(path, f"line {number}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(item, dict):
            raise IngestError(path, f"line {number}: expected a JSON object, got {_json_type(item)}")
        yield _row(path, _json_values(path, item, number), number)


def _json_values(path: Path, item: dict[str, object], line: int) -> dict[str, str | None]:
    values = {str(key).strip().lower(): value for key, value in item.items()}
    missing = [name for name in REQUIRED if name not in values]
    if missing:
        found = ", ".join(str(key) for key in item) or "(none)"
        raise IngestError(path, f"line {line}: missing required key(s): {', '.join(missing)}; found: {found}")
    result: dict[str, str | None] = {}
    for name in REQUIRED + OPTIONAL:
        value = values.get(name)
        if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int, float))):
            raise IngestError(path, f"line {line}: '{name}' must be a string, got {_json_type(value)}")
        result[name] = None if value is None else str(value)
    return result


def _row(path: Path, values: dict[str, str | None], line: int) -> Row:
    cleaned = {name: (value or "").strip() for name, value in values.items()}
    for name in REQUIRED:
        if not cleaned.get(name):
            raise IngestError(path, f"line {line}: empty {name}")
    return Row(
        question=cleaned["question"],
        answer=cleaned["answer"],
        id=cleaned.get("id") or None,
        label=cleaned.get("label") or None,
        line=line,
    )


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
