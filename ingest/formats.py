"""The knowledge file types ingest reads, and the reader of each: the one list that uploads, folders, the
page's file picker, the API and messages use.

Readers are named as "module:function" and imported on first use, so that listing the types (the upload
checks, the settings) never loads OCR, OpenCV or the HTML parsers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.readers import Reader


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    reader: str
    """"module:function" of its `ingest.readers.Reader`."""


FORMATS = (
    Format("PDF", (".pdf",), "ingest.readers:read_pdf"),
    Format("CSV", (".csv",), "ingest.readers:read_rows_file"),
    Format("JSONL", (".jsonl",), "ingest.readers:read_rows_file"),
    Format("Word", (".docx",), "ingest.readers:read_docx_file"),
    Format("HTML", (".html", ".htm"), "ingest.readers:read_html_file"),
    Format("Markdown", (".md", ".markdown"), "ingest.readers:read_markdown_file"),
)
SUPPORTED_SUFFIXES = tuple(suffix for format_ in FORMATS for suffix in format_.suffixes)


def expected_types() -> str:
    """".pdf, .csv, … or .markdown": how messages name the supported types."""
    *first, last = SUPPORTED_SUFFIXES
    return f"{', '.join(first)} or {last}" if first else last


def reader_for(suffix: str) -> "Reader":
    """The reader of files with this suffix (case-insensitive); KeyError for an unsupported one."""
    for format_ in FORMATS:
        if suffix.lower() in format_.suffixes:
            module, function = format_.reader.split(":")
            return getattr(importlib.import_module(module), function)
    raise KeyError(suffix)


__all__ = ["FORMATS", "SUPPORTED_SUFFIXES", "Format", "expected_types", "reader_for"]
