"""Judge training data: structured examples (schema), dataset readers (sources), candidate
mining, the builder, and the feedback loader. `python -m training.data --help` for the CLI."""

from training.data.schema import DataError, Example, StoredCandidate, read_examples, render, write_examples

__all__ = ["DataError", "Example", "StoredCandidate", "read_examples", "render", "write_examples"]
