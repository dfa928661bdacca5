"""The knowledge file types ingest reads: the one list that uploads, folders and messages use."""

from __future__ import annotations

SUPPORTED_SUFFIXES = (".pdf", ".csv", ".jsonl")


def expected_types() -> str:
    """".pdf, .csv or .jsonl": how messages name the supported types."""
    *first, last = SUPPORTED_SUFFIXES
    return f"{', '.join(first)} or {last}" if first else last


__all__ = ["SUPPORTED_SUFFIXES", "expected_types"]
