"""Builds knowledge files and held-out ticket sets from the public datasets, for benchmarks and eval.

Development tool only (the product never reads ../shared): writes into an output folder
    python benchmarks/make_eval_sets.py --datasets ../shared/datasets --out .bench
giving, per dataset, `<name>_knowledge.csv` (question, answer, label, id) and `<name>_val.jsonl`
(ticket, label; label null = out of scope, the right answer is to escalate).

Split rules (deterministic, the same everywhere in this repo):
- Banking77: a ticket is held out when sha1(text) % 10 == 0 (~10%; training/splits.py, unseeded);
  the rest is the knowledge base.
- CLINC150: its own `val` + `oos_val` are held out; `train` is the knowledge base (oos_train is
  not knowledge: nothing in the knowledge base answers it).
- HINT3 (SOF Mattress, Curekart, Powerplay11 train files; their test files stay held out and are
  never rebuilt): one `hint3` set, labels prefixed by company ("sofmattress:EMI") so the three
  companies' intents stay apart in one knowledge base; a ticket is held out by the Banking77 rule
  (sha1(text) % 10 == 0). The same split is also written per company (`hint3_<company>`: its own
  knowledge base and tickets), as the product is deployed: one company's knowledge per home. The train files have no out-of-scope rows, so neither has the set.
  HINT3 is kept out of the embedder's training: it measures whether a tuned embedder
  generalises to companies it never saw.
- StackFAQ (FAQ-style knowledge: one question per answer, like a company's FAQ document): the FAQ bank
  is the knowledge base minus a fifth of its FAQs (held out by the split's unseeded rule on the FAQ id,
  share 0.2); every paraphrased query is a ticket, labelled with its FAQ, or null when its FAQ was held
  out (nothing in the knowledge base answers it). The judge's training data includes StackFAQ queries,
  the embedder's does not.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from training.splits import held_out  # noqa: E402

HELD_OUT_SHARE = 0.1
"""Banking77 and HINT3 tickets held out (the split's unseeded rule: sha1(text) ends in 0)."""


def humanise(label: str) -> str:
    """"card_arrival" -> "Card arrival"; a company prefix ("curekart:ORDER_STATUS") is not shown."""
    return label.split(":")[-1].replace("_", " ").strip().capitalize()


def write_set(out: Path, name: str, knowledge: list[tuple[str, str]], val: list[tuple[str, str | None]]):
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{name}_knowledge.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "question", "answer", "label"])
        for i, (text, label) in enumerate(knowledge):
            writer.writerow([f"{name}-{i:05d}", text, humanise(label), label])
    with (out / f"{name}_val.jsonl").open("w", encoding="utf-8") as handle:
        for text, label in val:
            handle.write(json.dumps({"ticket": text, "label": label}) + "\n")
    print(f"{name}: {len(knowledge)} knowledge rows, {len(val)} held-out tickets")


def _split(rows: list[tuple[str, str]]) -> tuple[list, list]:
    """(knowledge, held-out tickets) by training/splits.py's unseeded rule."""
    held = [held_out(text, HELD_OUT_SHARE) for text, _ in rows]
    return [r for r, h in zip(rows, held) if not h], [r for r, h in zip(rows, held) if h]


def banking77(datasets: Path, out: Path) -> None:
    with (datasets / "banking77" / "train.csv").open(encoding="utf-8") as handle:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(handle)]
    write_set(out, "banking77", *_split(rows))


def clinc150(datasets: Path, out: Path) -> None:
    data = json.loads((datasets / "clinc150" / "data_full_train_val.json").read_text())
    val = [(t, l) for t, l in data["val"]] + [(t, None) for t, _ in data["oos_val"]]
    write_set(out, "clinc150", [(t, l) for t, l in data["train"]], val)


HINT3_COMPANIES = ("sofmattress", "curekart", "powerplay11")


def hint3(datasets: Path, out: Path) -> None:
    rows = []
    for company in HINT3_COMPANIES:
        with (datasets / "hint3" / f"{company}_train.csv").open(encoding="utf-8", newline="") as handle:
            rows += [(r["sentence"].strip(), f"{company}:{r['label'].strip()}") for r in csv.DictReader(handle)
                     if r["sentence"].strip() and r["label"].strip()]
    knowledge, tickets = _split(rows)
    write_set(out, "hint3", knowledge, tickets)
    for company in HINT3_COMPANIES:  # as the product is deployed: one knowledge base per company
        prefix = f"{company}:"
        write_set(out, f"hint3_{company}", [k for k in knowledge if k[1].startswith(prefix)],
                  [t for t in tickets if t[1] is not None and t[1].startswith(prefix)])


FAQ_HELD_OUT_SHARE = 0.2


def stackfaq(datasets: Path, out: Path) -> None:
    folder = datasets / "stackfaq"
    bank = [json.loads(line) for line in (folder / "faq_bank.jsonl").read_text(encoding="utf-8").splitlines() if line]
    held = {f["faq_id"] for f in bank if held_out(f["faq_id"], FAQ_HELD_OUT_SHARE)}
    with (folder / "queries_train.csv").open(encoding="utf-8", newline="") as handle:
        queries = [(r["query"].strip(), r["faq_id"]) for r in csv.DictReader(handle) if r["query"].strip()]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "stackfaq_knowledge.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "question", "answer", "label"])
        for f in bank:
            if f["faq_id"] not in held:
                writer.writerow([f["faq_id"], f["question"].strip(), (f["answers"] or [""])[0].strip(), f["faq_id"]])
    with (out / "stackfaq_val.jsonl").open("w", encoding="utf-8") as handle:
        for text, faq in queries:
            handle.write(json.dumps({"ticket": text, "label": None if faq in held else faq}) + "\n")
    print(f"stackfaq: {len(bank) - len(held)} FAQs, {len(held)} held out; {len(queries)} tickets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=Path(".bench"))
    args = parser.parse_args()
    banking77(args.datasets, args.out)
    clinc150(args.datasets, args.out)
    hint3(args.datasets, args.out)
    stackfaq(args.datasets, args.out)


if __name__ == "__main__":
    main()
