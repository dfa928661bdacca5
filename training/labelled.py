"""Labelled texts for the retrieval recipes (embedder, reranker): read, cleaned, and split into
knowledge and validation. One module so both recipes train and validate on the same split rules.

Rows come from knowledge files in the ingest format (`question`, `label`, optional `answer`) and
from the dataset readers of `training/datasets.py`. Each file or dataset is its own knowledge
base (`group`): pairs, hard negatives and nearest-neighbour metrics never cross groups, as a
company's tickets are only ever matched against its own knowledge base.

The split is deterministic for a seed:
- a seeded share of labels per group is held out: all their rows become validation tickets
  that should escalate (nothing of them is on the knowledge side);
- every other text goes to validation when a seeded hash of its normalised text falls under
  `validation_share`; the rest is the knowledge side, the only rows pairs are made from;
- out-of-scope rows (CLINC150's oos, …) split by the same hash: training-side ones serve as hard
  negatives, validation-side ones as tickets that should escalate.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from training.config import ConfigError
from training.datasets import DataError, read_jsonl_rows
from training.splits import fraction, held_out, text_key


@dataclass
class DataSection:
    files: list[str] = field(default_factory=list)
    """Labelled knowledge files in the ingest format (CSV or JSONL with `question` and `label`,
    optional `answer`, `id`): each file is one knowledge base."""
    sources: list[str] = field(default_factory=list)
    """Dataset readers from training/datasets.py (banking77, clinc150, bitext, hint3_*,
    stackfaq), read from `sources_dir`; each dataset is one knowledge base."""
    sources_dir: str = ""
    """Folder of the datasets (../shared/datasets), required with `sources`."""
    exclude: list[str] = field(default_factory=list)
    """Ticket files whose texts are dropped everywhere (evaluation tickets: JSONL with `ticket`,
    or CSV/JSONL with `question`), compared after lower-casing and joining whitespace."""
    out_of_scope_labels: list[str] = field(default_factory=lambda: ["oos", "NO_NODES_DETECTED"])
    """Labels that mean "nothing in the knowledge base answers this" (CLINC150's oos, HINT3's
    NO_NODES_DETECTED): such rows are never positives, only hard negatives or validation tickets
    that should escalate."""
    validation_share: float = 0.1
    """Share of texts held out for validation, chosen by a seeded hash of the normalised text."""
    heldout_label_share: float = 0.05
    """Share of labels per knowledge base whose rows all go to validation as out-of-scope
    tickets (nothing of them stays on the knowledge side), so thresholds are calibrated on
    tickets like the ones the product must escalate."""


DATA_PATH_FIELDS = {("data", "files"), ("data", "sources_dir"), ("data", "exclude")}
DATA_SHARES = {("data", "validation_share"), ("data", "heldout_label_share")}


def check_data_section(cfg: DataSection, where: str) -> None:
    """The checks every recipe reading labelled rows makes (ConfigError names the key)."""
    if not cfg.files and not cfg.sources:
        raise ConfigError(f"{where}: data.files or data.sources is required (labelled rows to train on)")
    if cfg.sources and not cfg.sources_dir:
        raise ConfigError(f"{where}: data.sources_dir is required with data.sources")
    if cfg.validation_share == 0:
        raise ConfigError(f"{where}: data.validation_share must be > 0 (metrics and calibration need validation)")


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str | None
    """None: out of scope, nothing in the knowledge base answers it."""
    group: str
    """The knowledge base it belongs to (file stem or dataset name)."""
    answer: str = ""
    """What the agent would send for it as a knowledge entry ("" when the data has none); the
    reranker reads it beside the question, as it does the product's candidates."""

    @property
    def key(self) -> tuple[str, str] | None:
        """Labels are only unique within their knowledge base."""
        return None if self.label is None else (self.group, self.label)


@dataclass
class LabelledData:
    rows: list[LabelledText]
    inputs: list[dict]
    """What was read (file path + sha256, or source + license), for the adapter's metadata."""
    notes: list[str] = field(default_factory=list)

    @property
    def data_hash(self) -> str:
        digest = hashlib.sha256()
        for row in self.rows:
            digest.update(f"{row.group}\t{row.label}\t{row.text}\n".encode("utf-8"))
        return digest.hexdigest()[:16]


@dataclass
class Split:
    knowledge: list[LabelledText]
    """In-scope rows on the training side: pairs are made here, and validation tickets are
    matched against them."""
    negatives: list[LabelledText]
    """Out-of-scope rows on the training side: hard negatives only."""
    validation: list[LabelledText]
    """Tickets; label None = should escalate (dataset out-of-scope, held-out labels, labels with
    no row left on the knowledge side)."""
    heldout_labels: list[str]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        in_scope = sum(r.label is not None for r in self.validation)
        return {"knowledge_rows": len(self.knowledge), "training_out_of_scope_rows": len(self.negatives),
                "validation_in_scope": in_scope, "validation_out_of_scope": len(self.validation) - in_scope,
                "heldout_labels": len(self.heldout_labels),
                "labels": len({r.key for r in self.knowledge})}


# --- reading --------------------------------------------------------------------------------------


def _decoded(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"{path}: data file not found")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {error.start})") from None


def _csv_records(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    reader = csv.DictReader(io.StringIO(_decoded(path), newline=""))
    try:
        header = [name.strip().lower() for name in reader.fieldnames or []]
        reader.fieldnames = header
        records = [(f"{path}:{reader.line_num}", row) for row in reader]
    except csv.Error as error:
        raise ConfigError(f"{path}: malformed CSV near line {reader.line_num} ({error})") from None
    return header, records


def _jsonl_records(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    _decoded(path)  # the same missing-file / encoding errors as CSV
    records, keys = [], set()
    try:
        for where, row in read_jsonl_rows(path):
            if not isinstance(row, dict):
                raise ConfigError(f"{where}: expected a JSON object")
            row = {str(k).strip().lower(): v for k, v in row.items()}
            keys.update(row)
            records.append((where, row))
    except DataError as error:
        raise ConfigError(str(error)) from None
    return sorted(keys), records


def _records(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_records(path)
    if suffix == ".jsonl":
        return _jsonl_records(path)
    raise ConfigError(f"{path}: unsupported file type {suffix or '(none)'}; expected .csv or .jsonl")


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else "" if value is None else str(value).strip()


def read_knowledge_file(path: Path, out_of_scope: set[str]) -> tuple[list[LabelledText], list[str]]:
    """Rows of one labelled knowledge file; rows with an empty label cannot be paired and are
    counted in the notes. ConfigError when the file is unusable, naming file and line."""
    path = Path(path)
    columns, records = _records(path)
    missing = [name for name in ("question", "label") if name not in columns]
    if missing:
        raise ConfigError(f"{path}: no {' and no '.join(repr(m) for m in missing)} column; the recipe trains "
                          f"on labelled rows (question, label[, answer]); found: {', '.join(columns) or '(none)'}")
    rows, unlabelled = [], 0
    for where, record in records:
        question, label = _text(record.get("question")), _text(record.get("label"))
        if not question:
            raise ConfigError(f"{where}: empty question")
        if not label:
            unlabelled += 1
            continue
        rows.append(LabelledText(question, None if label in out_of_scope else label, path.stem,
                                 _text(record.get("answer"))))
    notes = [f"{path.name}: {unlabelled} rows without a label skipped"] if unlabelled else []
    if not rows:
        raise ConfigError(f"{path}: no labelled rows")
    return rows, notes


def read_sources(names: list[str], root: Path, out_of_scope: set[str]) -> tuple[list[LabelledText], list[dict]]:
    from training import datasets as sources

    try:
        loaded = sources.load(names, Path(root))
    except (ValueError, FileNotFoundError, OSError, KeyError) as error:
        raise ConfigError(f"data.sources: {error}") from None
    rows, inputs = [], []
    for source in loaded:
        labelled = source.tickets + (source.kb or [])
        if not labelled:
            raise ConfigError(f"data.sources: {source.name} has no labelled rows (pairs only); remove it")
        rows += [LabelledText(r.text, None if r.label in out_of_scope else r.label, source.name, r.answer)
                 for r in labelled]
        rows += [LabelledText(text, None, source.name) for text in source.out_of_scope]
        inputs.append({"source": source.name, "license": source.license.name, "origin": source.license.origin})
    return rows, inputs


def excluded_texts(paths: list[str]) -> set[str]:
    """Normalised texts of evaluation tickets that must not be trained or validated on."""
    texts: set[str] = set()
    for path in map(Path, paths):
        columns, records = _records(path)
        column = next((c for c in ("ticket", "question", "text") if c in columns), None)
        if column is None:
            raise ConfigError(f"{path}: data.exclude needs a 'ticket', 'question' or 'text' column")
        texts.update(text_key(_text(record.get(column))) for _, record in records)
    return texts


def _file_input(path: Path) -> dict:
    return {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _clean(rows: list[LabelledText], excluded: set[str]) -> tuple[list[LabelledText], list[str]]:
    """Drop excluded texts, exact repeats, and texts that carry two labels in one knowledge base
    (they would be their own hard negative)."""
    labels_of: dict[tuple[str, str], set] = defaultdict(set)
    for row in rows:
        labels_of[(row.group, text_key(row.text))].add(row.label)
    seen, kept = set(), []
    dropped = Counter()
    for row in rows:
        key = (row.group, text_key(row.text))
        if key[1] in excluded:
            dropped["excluded (evaluation tickets)"] += 1
        elif len(labels_of[key]) > 1:
            dropped["text with conflicting labels"] += 1
        elif key in seen:
            dropped["repeated text"] += 1
        else:
            seen.add(key)
            kept.append(row)
    return kept, [f"dropped {n} rows: {why}" for why, n in sorted(dropped.items())]


def read_labelled(cfg: DataSection) -> LabelledData:
    out_of_scope = set(cfg.out_of_scope_labels)
    rows, inputs, notes = [], [], []
    for path in map(Path, cfg.files):
        file_rows, file_notes = read_knowledge_file(path, out_of_scope)
        rows += file_rows
        notes += file_notes
        inputs.append(_file_input(path))
    if cfg.sources:
        source_rows, source_inputs = read_sources(cfg.sources, Path(cfg.sources_dir), out_of_scope)
        rows += source_rows
        inputs += source_inputs
    excluded = excluded_texts(cfg.exclude)
    inputs += [{"excluded": _file_input(Path(p))} for p in cfg.exclude]
    rows, cleaning = _clean(rows, excluded)
    _check_pairable(rows)
    return LabelledData(rows, inputs, notes + cleaning)


def _check_pairable(rows: list[LabelledText]) -> None:
    sizes = Counter(r.key for r in rows if r.key is not None)
    if sum(1 for n in sizes.values() if n >= 2) < 2:
        raise ConfigError("data: need at least 2 labels with 2 or more rows each to make pairs; "
                          f"got {len(sizes)} labels and {sum(sizes.values())} labelled rows")


# --- splitting ------------------------------------------------------------------------------------


def heldout_labels(rows: list[LabelledText], share: float, seed: int) -> set[tuple[str, str]]:
    """round(share * labels) labels per group (at least one when share > 0 and the group has 4+
    labels, so at least 3 remain to train on), chosen by seeded hash."""
    by_group: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.label is not None:
            by_group[row.group].add(row.label)
    held = set()
    for group, labels in by_group.items():
        count = max(1, round(share * len(labels))) if share > 0 and len(labels) >= 4 else 0
        ranked = sorted(labels, key=lambda label: fraction(f"label\x1f{group}\x1f{label}", seed))
        held.update((group, label) for label in ranked[:count])
    return held


def split(data: LabelledData, cfg: DataSection, seed: int) -> Split:
    held = heldout_labels(data.rows, cfg.heldout_label_share, seed)
    knowledge, negatives, validation = [], [], []
    for row in data.rows:
        if row.key in held:
            validation.append(LabelledText(row.text, None, row.group, row.answer))
        elif held_out(row.text, cfg.validation_share, seed):
            validation.append(row)
        else:
            (knowledge if row.label is not None else negatives).append(row)
    # a label whose every row went to validation has nothing to match: those tickets should escalate
    known = {r.key for r in knowledge}
    orphaned = sum(1 for r in validation if r.label is not None and r.key not in known)
    validation = [r if r.label is None or r.key in known else LabelledText(r.text, None, r.group, r.answer)
                  for r in validation]
    notes = [f"{orphaned} validation tickets whose label has no knowledge row count as out of scope"] if orphaned else []
    return Split(knowledge, negatives, validation, sorted(f"{g}:{l}" for g, l in held), notes)


def describe(data: LabelledData, parts: Split) -> str:
    """What a recipe logs before training: the split's counts, then every note on reading and splitting."""
    return f"data: {parts.counts()}" + "".join(f"\n  note: {n}" for n in data.notes + parts.notes)
