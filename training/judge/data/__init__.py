"""Judge training data: structured examples (schema), candidate
mining, the builder, and the feedback loader. `python -m training.judge.data --help` for the CLI."""

from training.datasets import DataError
from training.judge.data.schema import Example, StoredCandidate, read_examples, render, write_examples

__all__ = ["DataError", "Example", "StoredCandidate", "read_examples", "render", "write_examples"]
