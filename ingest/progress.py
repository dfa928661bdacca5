"""How ingest reports progress: one callback type for the command line's bars and the page's progress."""

from __future__ import annotations

from typing import Callable

READING, OCR, TABLES, EMBEDDING = "reading", "ocr", "tables", "embedding"
"""The stages, in order: pages read from a text layer ("reading") or by OCR ("ocr", one event per scanned
page: the slow step), PDF pages searched for tables ("tables"), chunks embedded ("embedding")."""

ProgressFn = Callable[[str, int, int], None]
"""(stage, done, total)."""

__all__ = ["EMBEDDING", "OCR", "READING", "TABLES", "ProgressFn"]
