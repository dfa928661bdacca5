"""Readers for the labelled customer-service datasets in `../shared/datasets/` (see its README), and
for JSONL data files; shared by every training recipe.

Each reader returns a `Source`: labelled tickets, the knowledge base candidates come from, and
out-of-scope tickets, plus the license that travels into the build manifest. Held-out test
splits are not here and are never rebuilt.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from training.splits import text_key


class DataError(ValueError):
    """A data file or row the trainer cannot use; the message names the file and line."""


def _open_text(path: Path):
    """Plain or gzip-compressed (".gz": how a large build travels to the GPU machine)."""
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_jsonl_rows(path: Path) -> Iterator[tuple[str, object]]:
    """("file:line", parsed JSON) for every non-blank line of a JSONL (or JSONL.gz) file; a line
    that is not JSON is fatal and named."""
    with _open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: not valid JSON ({error.msg})") from None


@dataclass(frozen=True)
class Row:
    """A labelled text. As a ticket it asks; as a knowledge-base entry it is the question and
    `answer` is what the agent would send."""

    text: str
    label: str
    answer: str


@dataclass(frozen=True)
class License:
    name: str
    origin: str
    notes: str = ""
    redistributable: bool = True


@dataclass
class Source:
    """One dataset ready for mining.

    `kb` is None for intent datasets: the knowledge base is the other tickets (leave-one-out),
    like a company's past resolved tickets. StackFAQ has a real FAQ bank instead.
    """

    name: str
    license: License
    tickets: list[Row] = field(default_factory=list)
    kb: list[Row] | None = None
    out_of_scope: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str, bool]] = field(default_factory=list)


def humanise(label: str) -> str:
    """"card_arrival" -> "Card arrival"; a lone upper-case acronym ("EMI") stays as it is."""
    parts = [p for p in label.replace("-", "_").split("_") if p]
    if len(parts) == 1 and parts[0].isupper() and len(parts[0]) <= 4:
        return parts[0]
    text = " ".join(p.lower() for p in parts)
    return text[:1].upper() + text[1:]


def _csv_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _intent_rows(pairs) -> list[Row]:
    return [Row(t.strip(), l.strip(), humanise(l.strip())) for t, l in pairs if t.strip() and l.strip()]


LICENSES = {
    "banking77": License(
        "CC BY 4.0",
        "PolyAI-LDN/task-specific-datasets@57ec275 banking_data/train.csv; Casanueva et al. 2020",
    ),
    "clinc150": License(
        "CC BY 3.0", "clinc/oos-eval@828f809 data/data_full.json (train, val, oos_*); Larson et al. 2019"
    ),
    "bitext": License(
        "CDLA-Sharing-1.0",
        "bitext/customer-support-llm-chatbot-training-dataset@337b968",
        "sharing terms apply to redistributed derived data",
    ),
    "hint3": License(
        "ODbL 1.0 (contents DbCL 1.0)",
        "hellohaptik/HINT3@99965c8 dataset/v2/train; Arora et al. 2020",
        "share-alike database license; attribution required",
    ),
    "stackfaq": License(
        "none stated (StackExchange posts CC BY-SA; paraphrases by TakeLab)",
        "ML-Recipes/BERT-FAQ@3c18403 data/StackFAQ; Karan & Snajder 2018",
        "research use with attribution",
        redistributable=False,
    ),
    "mqp": License(
        "none stated",
        "curai/medical-question-pair-dataset@6c7f7fd mqp.csv; McCreery et al. 2020",
        "internal research only; ask the owner before redistributing",
        redistributable=False,
    ),
}


def banking77(root: Path) -> Source:
    rows = _csv_rows(root / "banking77" / "train.csv")
    return Source("banking77", LICENSES["banking77"], _intent_rows((r["text"], r["category"]) for r in rows))


def clinc150(root: Path) -> Source:
    data = json.loads((root / "clinc150" / "data_full_train_val.json").read_text(encoding="utf-8"))
    tickets = _intent_rows(data["train"] + data["val"])
    oos = [text.strip() for text, _ in data["oos_train"] + data["oos_val"] if text.strip()]
    return Source("clinc150", LICENSES["clinc150"], tickets, out_of_scope=oos)


def bitext(root: Path) -> Source:
    rows = _csv_rows(root / "bitext_customer_support" / "bitext_cs_train.csv")
    tickets = [
        Row(r["instruction"].strip(), r["intent"].strip(), r["response"].strip())
        for r in rows
        if r["instruction"].strip()
    ]
    return Source("bitext", LICENSES["bitext"], tickets)


def _hint3(company: str) -> Callable[[Path], Source]:
    def read(root: Path) -> Source:
        rows = _csv_rows(root / "hint3" / f"{company}_train.csv")
        tickets = _intent_rows((r["sentence"], r["label"]) for r in rows)
        return Source(f"hint3_{company}", LICENSES["hint3"], tickets)

    return read


def stackfaq(root: Path) -> Source:
    folder = root / "stackfaq"
    bank = [json.loads(line) for line in (folder / "faq_bank.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    kb = [Row(f["question"].strip(), f["faq_id"], (f["answers"] or [""])[0].strip()) for f in bank]
    answers = {row.label: row.answer for row in kb}
    tickets = [
        Row(r["query"].strip(), r["faq_id"], answers.get(r["faq_id"], ""))
        for r in _csv_rows(folder / "queries_train.csv")
        if r["query"].strip()
    ]
    return Source("stackfaq", LICENSES["stackfaq"], tickets, kb=kb)


def mqp(root: Path) -> Source:
    rows = _csv_rows(root / "medical_question_pairs" / "mqp_train.csv")
    pairs = [(r["question_1"].strip(), r["question_2"].strip(), r["label"].strip() == "1") for r in rows]
    return Source("mqp", LICENSES["mqp"], pairs=pairs)


READERS: dict[str, Callable[[Path], Source]] = {
    "banking77": banking77,
    "clinc150": clinc150,
    "bitext": bitext,
    "hint3_sofmattress": _hint3("sofmattress"),
    "hint3_curekart": _hint3("curekart"),
    "hint3_powerplay11": _hint3("powerplay11"),
    "stackfaq": stackfaq,
    "mqp": mqp,
}
# bank_faqs is deliberately absent: scraped bank text, not ours to train a shipped model on.
DEFAULT_SOURCES = tuple(READERS)
# Sources whose derived data may be committed and shipped (DESIGN.md: licensed for reuse).
REDISTRIBUTABLE = ("banking77", "clinc150", "bitext")


def load(names, root: Path) -> list[Source]:
    unknown = sorted(set(names) - set(READERS))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; known: {sorted(READERS)}")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"sources folder not found: {root}")
    return [READERS[name](Path(root)) for name in names]


def without_texts(loaded: list[Source], excluded: set[str]) -> list[Source]:
    """The sources minus every row whose normalised text is in `excluded` (held-out eval tickets):
    they appear nowhere, neither as ticket nor as knowledge-base entry nor as pair."""

    def keep(text: str) -> bool:
        return text_key(text) not in excluded

    for source in loaded:
        source.tickets = [r for r in source.tickets if keep(r.text)]
        source.kb = None if source.kb is None else [r for r in source.kb if keep(r.text)]
        source.out_of_scope = [t for t in source.out_of_scope if keep(t)]
        source.pairs = [p for p in source.pairs if keep(p[0]) and keep(p[1])]
    return loaded
