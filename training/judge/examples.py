"""From example files to the token ids the trainer sees.

Examples are rendered by `reasoner.prompt` (through `training.judge.data.schema.render`) and tokenized
here, prompt and completion apart with add_special_tokens=False: the rendered text already holds
the template's markers, and the judge tokenizes its prompt alone the same way, so training sees
exactly the ids inference will. Only completion tokens (reasoning, answer, end of turn) carry loss.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from reasoner import prompt
from training.config import ConfigError
from training.judge.config import DataSection
from training.judge.data.feedback import load_feedback
from training.datasets import DataError
from training.judge.data.schema import Example, read_examples, render


@dataclass
class Examples:
    train: list[Example]
    validation: list[Example]
    data_hash: str
    """sha256 over the bytes of every data file used (train, validation, feedback)."""
    notes: list[str]


def _file_hash(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode("utf-8") + b"\0")
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _keep(example: Example, data: DataSection) -> bool:
    fmt_ok = data.prompt_format == "both" or example.format == data.prompt_format
    return fmt_ok and (not data.sources or example.source in data.sources)


def _sample(examples: list[Example], limit: int, seed: int, tag: str) -> list[Example]:
    if not limit or len(examples) <= limit:
        return examples
    chosen = examples[:]
    random.Random(f"{seed}:{tag}").shuffle(chosen)
    return chosen[:limit]


def load_examples(data: DataSection, seed: int) -> Examples:
    """Read, validate, filter and sample; every problem is a ConfigError naming the file and line."""
    try:
        train = read_examples(Path(data.train))
        validation = read_examples(Path(data.validation))
        notes = []
        for path in data.feedback:
            loaded = load_feedback(Path(path), seed=seed)
            train += [e for e in loaded.examples if e.split == "train"]
            validation += [e for e in loaded.examples if e.split == "validation"]
            if loaded.skipped:
                notes.append(f"{path}: {loaded.skipped} feedback rows skipped (chosen id not shown)")
    except DataError as error:
        raise ConfigError(str(error)) from None
    train = _sample([e for e in train if _keep(e, data)], data.max_train_examples, seed, "train")
    validation = _sample([e for e in validation if _keep(e, data)], data.max_validation_examples, seed, "val")
    for name, rows in (("data.train", train), ("data.validation", validation)):
        if not rows:
            raise ConfigError(f"{name}: no {data.prompt_format} examples left after filtering "
                              f"(sources={data.sources or 'all'})")
    return Examples(train, validation, _file_hash([data.train, data.validation, *data.feedback]), notes)


@dataclass
class Tokenized:
    rows: list[dict]
    dropped_long: int


def tokenize(examples: list[Example], tokenizer, data: DataSection, max_length: int) -> Tokenized:
    """input_ids / completion_mask / length per example; longer than max_length are dropped."""
    rows, dropped = [], 0
    for example in examples:
        prompt_text, completion = render(example, tokenizer, data.top_k, data.shuffle_candidates)
        prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
        completion_ids = tokenizer.encode(completion, add_special_tokens=False)
        ids = prompt_ids + completion_ids
        if len(ids) > max_length:
            dropped += 1
            continue
        rows.append({
            "input_ids": ids,
            "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
            "length": len(ids),
        })
    return Tokenized(rows, dropped)


def to_dataset(tokenized: Tokenized, what: str):
    from datasets import Dataset

    if not tokenized.rows:
        raise ConfigError(f"{what}: every example is longer than model.max_seq_length")
    return Dataset.from_list(tokenized.rows)


def completion_token_lengths(examples: list[Example], tokenizer, data: DataSection) -> list[int]:
    return [len(tokenizer.encode(render(e, tokenizer, data.top_k, data.shuffle_candidates)[1],
                                 add_special_tokens=False)) for e in examples]


def judge_format(data: DataSection) -> str:
    """The judge format the adapter is for: listwise unless it was trained on pairwise only."""
    return prompt.PAIRWISE if data.prompt_format == prompt.PAIRWISE else prompt.LISTWISE
