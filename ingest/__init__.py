"""Knowledge files in, chunks out: reads PDFs (page text, OCR of scanned pages, running headers and footers
stripped, FAQ pairs recovered, table rows with their headings), DOCX, HTML and Markdown (pairs and passages
by section), CSV and JSONL rows, and writes each file all-or-nothing through the store.

Public faces (loaded on first use): `ingest_paths`, `ingest_file`, `IngestOptions`, `IngestResult`
(pipeline.py), `SUPPORTED_SUFFIXES` (formats.py), `IngestError` (errors.py).
"""

import importlib

_EXPORTS = {"ingest_paths": "ingest.pipeline", "ingest_file": "ingest.pipeline", "IngestOptions": "ingest.pipeline",
            "IngestResult": "ingest.pipeline", "SUPPORTED_SUFFIXES": "ingest.formats", "IngestError": "ingest.errors"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
