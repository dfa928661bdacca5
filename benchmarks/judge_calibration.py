"""Calibrate how the judge is combined with the retriever, and measure the pipeline against the
retriever alone, on held-out labelled tickets (the quality bar of the training issue).

Three stages, each resumable from the files the previous one wrote, so the model-heavy middle one
can run on the GPU machine without Chroma or the embedder (and `sets` first, to calibrate on a
validation split that no benchmark scores):

    python benchmarks/judge_calibration.py sets --config training/configs/minilm-embedder-gpu.toml \
        --bench .bench/calib-sets                                           # the embedder's validation split
    python benchmarks/judge_calibration.py retrieve --work .bench/calib     # CPU: stores + top-k
    python benchmarks/judge_calibration.py judge --work .bench/calib --device cuda --batch 64
    python benchmarks/judge_calibration.py report --work .bench/calib [--write data/models/judge-smollm2]

- sets: an embedder config's own split (training/labelled.py, its seed) written as eval-set files,
  one per knowledge base: the knowledge side as `<group>_knowledge.csv`, its validation tickets
  (held-out labels as out of scope) as `<group>_val.jsonl`. The embedder never trained on them and
  the benchmark's held-out tickets are excluded, so a calibration fitted there is scored cleanly by
  `agent-helper eval` on the benchmark.
- retrieve: per set (knowledge CSV + held-out JSONL from make_eval_sets.py) a store built with the
  chosen embedder, a seeded sample of tickets (all out-of-scope ones kept, since they are few), and
  the retriever's top-k candidates -> `<work>/candidates.jsonl`.
- judge: `Judge.decide_many` over those candidates -> `<work>/judged.jsonl` (the judge's own
  distribution over [none, 1..k], its reasoning, and the candidates' labels and similarities).
- report: the combination parameters (judge weight, threshold, retriever temperature and
  none-similarity) are searched for the best accuracy over all sets pooled; the metrics printed
  are cross-fitted (fit on even tickets, scored on odd ones and the other way round), so no number
  is scored on the tickets it was fitted on. Baselines: the retriever's top-1 as is (never
  escalates) and the retriever calibrated the same way (judge weight 0). `--write ADAPTER` stores
  the calibration fitted on all tickets in the adapter's agent_helper.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_SETS = ("banking77", "clinc150")
EMBEDDER_FILE = "embedder.json"  # which embedder found the candidates: calibrations are per embedder


# --- sets -------------------------------------------------------------------------------------


def write_sets(args) -> None:
    from benchmarks.make_eval_sets import write_set
    from training.embedder.config import load_embedder_config
    from training.labelled import read_labelled, split

    cfg = load_embedder_config(args.config)
    parts = split(read_labelled(cfg.data), cfg.data, cfg.train.seed)
    for group in sorted({r.group for r in parts.knowledge}):
        knowledge = [(r.text, r.label) for r in parts.knowledge if r.group == group]
        tickets = [(r.text, r.label) for r in parts.validation if r.group == group]
        write_set(args.bench, group, knowledge, tickets)


# --- retrieve ---------------------------------------------------------------------------------


def sample_tickets(path: Path, in_scope: int, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    inside = [r for r in rows if r["label"] is not None]
    random.Random(seed).shuffle(inside)
    return inside[:in_scope] + [r for r in rows if r["label"] is None]


def retrieve(args) -> None:
    from ingest.pipeline import ingest_paths
    from retriever.embedder import shared_embedder
    from retriever.hybrid import HybridRetriever
    from retriever.store import KnowledgeStore

    embedder = shared_embedder(None, str(args.embedder_adapter) if args.embedder_adapter else None)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / EMBEDDER_FILE).write_text(json.dumps({"name": embedder.name, "hash": embedder.hash}) + "\n")
    with (args.work / "candidates.jsonl").open("w", encoding="utf-8") as out:
        for name in args.sets:
            store = KnowledgeStore(args.work / f"home-{name}-{embedder.hash}", embedder)
            if store.count() == 0:
                ingest_paths(store, [args.bench / f"{name}_knowledge.csv"])
            retriever = HybridRetriever(store)
            tickets = sample_tickets(args.bench / f"{name}_val.jsonl", args.in_scope, args.seed)
            for t in tickets:
                candidates = [c.to_dict() for c in retriever.search(t["ticket"], k=args.top_k)]
                out.write(json.dumps({"set": name, **t, "candidates": candidates}) + "\n")
            print(f"{name}: {len(tickets)} tickets retrieved with {embedder.name} ({embedder.hash})", flush=True)


# --- judge ------------------------------------------------------------------------------------


def judge(args) -> None:
    import time

    from reasoner.backends import ModelConfig, load_model
    from reasoner.judge import Judge, JudgeConfig
    from retriever.candidates import Candidate

    rows = [json.loads(line) for line in (args.work / "candidates.jsonl").open(encoding="utf-8")]
    loaded = load_model(ModelConfig(base=args.base, adapter=args.adapter, device=args.device, dtype=args.dtype,
                                    cache_dir=args.work / "models"))
    config = JudgeConfig.from_metadata(loaded.adapter_metadata, top_k=args.top_k,
                                       max_new_tokens=args.max_new_tokens, route=False)  # every ticket judged
    the_judge = Judge(loaded, config)
    started = time.perf_counter()
    with (args.work / "judged.jsonl").open("w", encoding="utf-8") as out:
        for begin in range(0, len(rows), args.batch):
            batch = rows[begin : begin + args.batch]
            items = [(r["ticket"], [Candidate(**c) for c in r["candidates"]]) for r in batch]
            for row, verdict in zip(batch, the_judge.decide_many(items, batch_size=args.batch)):
                out.write(json.dumps(_judged_row(row, verdict)) + "\n")
            done = begin + len(batch)
            rate = done / (time.perf_counter() - started)
            print(f"judged {done}/{len(rows)} ({rate:.1f} tickets/s)", flush=True)
    print(f"model: {the_judge.model_name}; max_new_tokens {config.max_new_tokens}", flush=True)


def _judged_row(row: dict, verdict) -> dict:
    picks = [c.judge_probability for c in verdict.candidates]
    return {
        "set": row["set"], "ticket": row["ticket"], "label": row["label"],
        "labels": [c["label"] for c in row["candidates"]],
        "scores": [c["score"] if c.get("rank_score") is None else c["rank_score"] for c in row["candidates"]],
        "closest": [c["score"] for c in row["candidates"]],
        "judge": [max(0.0, 1.0 - sum(picks)), *picks],
        "readings": verdict.readings,
        "reasoning": verdict.reasoning,
    }


# --- report -----------------------------------------------------------------------------------


def as_judged(row: dict, reading: str = "answer"):
    from training.judge.evaluation import Judged

    labels = row["labels"]
    judge = row.get("readings", {}).get(reading, row["judge"])
    if row["label"] is None:
        gold = 0
    else:  # an in-scope ticket whose label was not retrieved can never be right (-1)
        gold = labels.index(row["label"]) + 1 if row["label"] in labels else -1
    return Judged(judge=tuple(judge), similarities=tuple(row["scores"]), gold=gold, labels=tuple(labels))


def set_metrics(rows: list[dict], choices: list[int]) -> dict:
    from reasoner.evaluate import metrics

    predicted = [None if c == 0 else r["labels"][c - 1] for r, c in zip(rows, choices)]
    return metrics([r["label"] for r in rows], predicted, [c == 0 for c in choices], [r["labels"] for r in rows])


def report(args) -> None:
    rows = [json.loads(line) for line in (args.work / "judged.jsonl").open(encoding="utf-8")]
    rows = _with_oos_share(rows, args.oos_share, args.seed)
    random.Random(args.seed).shuffle(rows)  # halves mix the sets evenly
    # What the service does first: nothing close -> escalate, model not asked. So the calibration
    # is fitted on, and decides, only the tickets above the floor.
    floor = -1.0 if args.floor is None else args.floor
    asked = [i for i, r in enumerate(rows) if max(r.get("closest", r["scores"]), default=0.0) >= floor]
    if args.floor is not None:
        print(f"floor {args.floor}: {len(rows) - len(asked)} of {len(rows)} tickets escalate before the judge")
    judged = [as_judged(rows[i], args.reading) for i in asked]
    fitted, decided = _weight_only(judged, args) if args.weight_only else _full_grid(judged)
    variants = {"retriever top-1": [1 if r["labels"] else 0 for r in rows]}
    for name, choices in decided.items():
        variants[name] = [0] * len(rows)
        for i, choice in zip(asked, choices):
            variants[name][i] = choice
    table = {}
    for name in sorted({r["set"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["set"] == name]
        table[name] = {v: set_metrics([rows[i] for i in idx], [c[i] for i in idx]) for v, c in variants.items()}
    calibration = {**asdict(fitted), "judge_reading": args.reading,
                   "fitted_on": f"{len(judged)} tickets of {', '.join(sorted({r['set'] for r in rows}))}"
                                + (f", out-of-scope share {args.oos_share}" if args.oos_share is not None else "")
                                + ("; only the judge's weight fitted" if args.weight_only else "")}
    if args.floor is not None:
        calibration["fitted_above_floor"] = args.floor
    print(json.dumps({"sets": table, "calibration_all": calibration}, indent=1))
    _print_table(table)
    if args.write:
        embedder = json.loads((args.work / EMBEDDER_FILE).read_text())
        _write_calibration(args.write, calibration, table, embedder, args.default)


def _with_oos_share(rows: list[dict], share: float | None, seed: int) -> list[dict]:
    """A seeded sample of the out-of-scope tickets, so that they make `share` of the whole: the
    escalation a calibration learns depends on how often tickets have no answer."""
    if share is None:
        return rows
    inside = [r for r in rows if r["label"] is not None]
    outside = [r for r in rows if r["label"] is None]
    keep = min(len(outside), round(share * len(inside) / (1 - share)))
    print(f"out-of-scope share {share}: {keep} of {len(outside)} out-of-scope tickets kept beside {len(inside)}")
    return inside + random.Random(seed).sample(outside, keep)


def _full_grid(judged: list):
    """Weight, temperature, none-similarity and threshold searched together."""
    from training.judge.evaluation import WEIGHTS, argmax_predictions, calibrate, cross_fitted_predictions

    return calibrate(judged, WEIGHTS)[0], {
        "retriever calibrated": cross_fitted_predictions(judged, (0.0,)),
        "judge alone": argmax_predictions(judged),
        "pipeline calibrated": cross_fitted_predictions(judged, WEIGHTS),
    }


def _weight_only(judged: list, args):
    """The adapter's retriever calibration for this embedder kept; only the judge's weight fitted,
    cross-fitted over two halves for the reported numbers."""
    from reasoner.judge import JudgeConfig
    from reasoner.metadata import AdapterMetadata
    from training.judge.evaluation import (
        Calibration, argmax_predictions, calibrate_weight, cross_fitted_predictions, predictions,
    )

    embedder = json.loads((args.work / EMBEDDER_FILE).read_text())
    c = JudgeConfig.from_metadata(AdapterMetadata.read(args.adapter), embedder_hash=embedder["hash"])
    retriever = Calibration(0.0, c.threshold, c.retriever_temperature, c.retriever_none_similarity)

    def fit_weight(part: list) -> Calibration:
        calibration = calibrate_weight(part, retriever)
        print(f"weight fitted on one half: {calibration.judge_weight}")
        return calibration

    pipeline = cross_fitted_predictions(judged, fit=fit_weight)
    gold = [j.gold for j in judged]
    for w in (0.0, 0.1, 0.2, 0.3, 0.5):
        chosen = predictions(judged, replace(retriever, judge_weight=w))
        print(f"judge weight {w}: accuracy {sum(p == g for p, g in zip(chosen, gold)) / len(gold):.4f}")
    return calibrate_weight(judged, retriever), {
        "retriever calibrated": predictions(judged, retriever),
        "judge alone": argmax_predictions(judged),
        "pipeline calibrated": pipeline,
    }


def _print_table(table: dict) -> None:
    print(f"\n{'set':10s} {'variant':22s} {'acc':>7s} {'in-scope':>9s} {'oos rec':>8s} {'n':>5s}")
    for name, variants in table.items():
        for variant, m in variants.items():
            oos = "-" if m["oos_recall"] is None else f"{m['oos_recall']:.3f}"
            print(f"{name:10s} {variant:22s} {m['accuracy']:7.4f} {m['in_scope_accuracy']:9.4f} {oos:>8s} {m['n']:5d}")


def _write_calibration(adapter: Path, calibration: dict, table: dict, embedder: dict, default: bool) -> None:
    """Under `calibrations[<embedder hash>]` (what the judge uses beside that embedder); with
    `default`, also the adapter's default calibration, used beside any other embedder."""
    from reasoner.metadata import AdapterMetadata

    metadata = AdapterMetadata.read(adapter).with_calibration(
        calibration, embedder["hash"], as_default=default, embedder=embedder["name"], pipeline_vs_retriever=table)
    print(f"calibration written to {metadata.write(adapter)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("sets", "retrieve", "judge", "report"))
    parser.add_argument("--config", type=Path, default=Path("training/configs/minilm-embedder-gpu.toml"),
                        help="sets: the embedder config whose validation split to write")
    parser.add_argument("--work", type=Path, default=Path(".bench/calib"))
    parser.add_argument("--bench", type=Path, default=Path(".bench"), help="make_eval_sets.py output")
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    parser.add_argument("--in-scope", type=int, default=500, help="in-scope tickets sampled per set")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--embedder-adapter", type=Path, default=None, help="retriever embedder adapter")
    parser.add_argument("--base", default="embedded", help="judge base model")
    parser.add_argument("--adapter", type=Path, default=Path("data/models/judge-smollm2"), help="judge adapter")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", default="auto",
                        help="judge dtype (reasoner.backends.DTYPES); float32 on a GPU gives the CPU product's verdicts")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--reading", choices=("answer", "commit"), default="answer",
                        help="which judge distribution to calibrate (reasoner.judge.JudgeConfig.judge_reading)")
    parser.add_argument("--floor", type=float, default=None,
                        help="the embedder's escalate_below: tickets whose best similarity is below it escalate")
    parser.add_argument("--weight-only", action="store_true",
                        help="keep the adapter's retriever calibration for this embedder; fit only the judge's weight")
    parser.add_argument("--oos-share", type=float, default=None,
                        help="sample the out-of-scope tickets down to this share of all tickets before fitting")
    parser.add_argument("--default", action="store_true",
                        help="with --write: also make it the adapter's default calibration")
    parser.add_argument("--write", type=Path, default=None, help="adapter folder to store the calibration in")
    args = parser.parse_args(argv)
    {"sets": write_sets, "retrieve": retrieve, "judge": judge, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
