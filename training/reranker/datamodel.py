"""What a reranker folder says about itself: reranker.json (read by retriever/reranker.py) and
the adapter config's base model name."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from retriever.reranker import FORMAT_VERSION, RERANKER_METADATA, Scoring
from training.runs import versions


def fix_adapter_config(out: Path, identity: dict) -> None:
    """Name the base model, not this machine's folder, in PEFT's adapter_config.json."""
    file = out / "adapter_config.json"
    config = json.loads(file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = identity["name"]
    file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def flat_metrics(metrics: dict) -> dict:
    """validation_<order>_<metric> numbers for metrics.jsonl and the tracker."""
    flat = {}
    for order in ("retriever", "reranker", "fused", "fused_cross_fitted"):
        for key in ("top1", "recall_at_5"):
            if metrics[order][key] is not None:
                flat[f"validation_{order}_{key}"] = metrics[order][key]
    return flat


def metadata(cfg, pre, mined, scoring: Scoring, metrics: dict, epochs: list[dict], extra: dict,
             backend: str) -> dict:
    r = cfg.reranker
    losses = extra.pop("losses")
    return {
        "format_version": FORMAT_VERSION,
        "base_model": pre.base.identity,
        "document": {"format": r.document, "answer_chars": r.answer_chars},
        "max_length": r.max_length,
        "scoring": {name: getattr(scoring, name) for name in Scoring.__dataclass_fields__},
        "metrics": {"validation": metrics, "epochs": epochs,
                    "best_epoch": next((e["epoch"] for e in reversed(epochs) if e.get("kept")), None),
                    "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None},
        "data": {"inputs": pre.data.inputs, "hash": pre.data.data_hash, "notes": pre.data.notes + pre.split.notes,
                 "split": pre.split.counts(), "heldout_labels": pre.split.heldout_labels},
        "mining": {"embedder": mined.embedder, **mined.counts()},
        "config": cfg.to_dict(),
        "seed": cfg.train.seed,
        "backend": backend,
        "versions": versions(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def write(out: Path, meta: dict) -> None:
    meta["adapter_bytes"] = (out / "adapter_model.safetensors").stat().st_size
    (out / RERANKER_METADATA).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
