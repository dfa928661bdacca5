"""`agent_helper.json`: what a judge adapter says about itself. This module is its one reader and writer.

The trainer writes it beside the adapter; calibration (benchmarks/judge_calibration.py) adds to it;
the model loader checks its prompt version; the judge takes its settings from it. Layout:

    {"prompt_version": "listwise-v2", "prompt_format": "listwise", "base_model": "embedded",
     "top_k": 5, "max_new_tokens": 50,                      # how the judge runs
     "calibration": {"judge_weight": …, "threshold": …, …},  # the mix with the retriever (default)
     "calibrations": {"<embedder hash>": {…}},               # the mix fitted beside one embedder
     "metrics": {…}, "config": {…}, …}                        # the run's record, read by people

The mix depends on the embedder's similarity scale, so the judge takes `calibrations[hash]` of the
embedder that found its candidates when there is one, else `calibration`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from reasoner.prompt import PROMPT_VERSION

ADAPTER_METADATA = "agent_helper.json"
RUN_SETTINGS = ("prompt_format", "top_k", "max_new_tokens")
"""Top-level keys that set how the judge runs."""


class MetadataError(ValueError):
    """An adapter's metadata is missing, unreadable or made for other code; the message says what to fix."""


@dataclass
class AdapterMetadata:
    values: dict = field(default_factory=dict)

    @classmethod
    def read(cls, adapter_dir: Path) -> "AdapterMetadata":
        """The adapter's agent_helper.json, checked against this code's prompt version."""
        meta_file = Path(adapter_dir) / ADAPTER_METADATA
        if not meta_file.is_file():
            raise MetadataError(
                f"adapter {adapter_dir} has no {ADAPTER_METADATA}: without it the prompt version and "
                "threshold it was trained with are unknown; retrain or add the file")
        try:
            values = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise MetadataError(f"cannot read {meta_file}: {error}") from error
        if not isinstance(values, dict):
            raise MetadataError(f"{meta_file} must hold a JSON object")
        version = values.get("prompt_version")
        if version != PROMPT_VERSION:
            raise MetadataError(
                f"adapter {adapter_dir} was trained on prompt version {version!r}, but this code "
                f"renders {PROMPT_VERSION!r}; retrain the adapter or use the matching release")
        return cls(values)

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def __getitem__(self, key: str):
        return self.values[key]

    def judge_settings(self, embedder_hash: str | None = None) -> dict:
        """How the judge runs (RUN_SETTINGS) and mixes its vote: the default calibration, then the
        one fitted beside the embedder with this hash, when there is one."""
        settings = {k: self.values[k] for k in RUN_SETTINGS if self.values.get(k) is not None}
        settings.update(self.values.get("calibration") or {})
        per_embedder = (self.values.get("calibrations") or {}).get(embedder_hash) if embedder_hash else None
        settings.update(per_embedder or {})
        return settings

    def with_calibration(self, calibration: dict, embedder_hash: str | None = None, *,
                         as_default: bool = False, **record) -> "AdapterMetadata":
        """A copy with `calibration` fitted beside the embedder `embedder_hash` (and `record`,
        e.g. the figures behind it, stored with it); `as_default` also makes it the default."""
        values = json.loads(json.dumps(self.values))
        if embedder_hash is not None:
            values.setdefault("calibrations", {})[embedder_hash] = {**calibration, **record}
        if as_default or embedder_hash is None:
            values["calibration"] = dict(calibration)
        return AdapterMetadata(values)

    def write(self, adapter_dir: Path) -> Path:
        """Write agent_helper.json into `adapter_dir` whole or not at all."""
        target = Path(adapter_dir) / ADAPTER_METADATA
        handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent,
                                             prefix=f".{target.name}-", delete=False)
        try:
            with handle:
                handle.write(json.dumps(self.values, indent=2, sort_keys=True) + "\n")
            os.chmod(handle.name, 0o644)
            os.replace(handle.name, target)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
        return target


__all__ = ["ADAPTER_METADATA", "AdapterMetadata", "MetadataError", "RUN_SETTINGS"]
