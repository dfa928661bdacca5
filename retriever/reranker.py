"""The cross-encoder reranker: reads the ticket beside each candidate resolution and reorders them.

The retriever's label vote compares vectors made separately for the ticket and each row; a
cross-encoder reads both texts together, so it sees which words decide between two close
resolutions. The model is all-MiniLM-L6-v2 (the packaged embedder's weights) with a LoRA adapter
and a one-logit classification head, trained by `training/reranker`.

A reranker folder holds PEFT's `adapter_config.json` / `adapter_model.safetensors` and
`reranker.json` (RERANKER_METADATA): the format version, the base model's name and hash, how a
candidate is written for the model (`document`), `max_length`, the scoring fitted on validation
(fusion weight and calibration), the metrics and where the data came from. A folder without it,
of another format version or for another base model is refused with a RerankerError naming the
folder and the problem.

Order and score (one source of truth, used by training too):
- fused = alpha * z(logit) + (1 - alpha) * z(label vote), each standardised by constants measured
  on validation, so alpha (fitted on validation) reads as the reranker's share of the decision;
- rerank_score = sigmoid(a * fused + b) (Platt scaling on validation): the probability that the
  candidate is the ticket's resolution. `Candidate.score` (cosine, the similarity floor's input)
  is left as it was.

On CPU the merged model runs with dynamic int8 Linear layers (torch.ao quantize_dynamic): about
3x faster than fp32 for 20 candidates; benchmarks/reranker.py measures speed and agreement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from retriever.candidates import Candidate
from retriever.embedder import PACKAGED_MODEL_NAME, model_hash, packaged_model_path

RERANKER_METADATA = "reranker.json"
SHIPPED_FOLDER = "reranker-minilm"
"""The shipped reranker's folder in data/models/ (package agent_helper_models)."""
FORMAT_VERSION = 1
DOCUMENT_FORMATS = ("question", "question+answer")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
BASE_DECLARATION = "base_model.json"
"""In a base folder: {name, hash} of the model this folder is a reduced copy of (say fp16, made to
train on a machine without the model package); an adapter trained on it is for that model."""


class RerankerError(RuntimeError):
    """A reranker folder that cannot be used; the message names the folder and what is wrong."""


def candidate_text(question: str, answer: str, document: str, answer_chars: int) -> str:
    """What the cross-encoder reads for a candidate: its question, and the start of its answer
    where the format says so (the answer names the resolution on intent knowledge bases)."""
    if document == "question" or not answer:
        return question
    return f"{question}\n{answer[:answer_chars]}"


@dataclass(frozen=True)
class Scoring:
    """How a logit and a label vote become the order and the calibrated probability."""

    alpha: float
    """Reranker's share of the fused score: 0 = the retriever's order, 1 = the reranker's."""
    logit_mean: float
    logit_std: float
    label_mean: float
    label_std: float
    platt_a: float
    platt_b: float

    def fused(self, logits: np.ndarray, label_scores: np.ndarray) -> np.ndarray:
        logit_z = (np.asarray(logits, np.float64) - self.logit_mean) / self.logit_std
        label_z = (np.asarray(label_scores, np.float64) - self.label_mean) / self.label_std
        return self.alpha * logit_z + (1.0 - self.alpha) * label_z

    def on_vote_scale(self, fused: np.ndarray) -> np.ndarray:
        """The fused score in the label vote's units (a cosine similarity where alpha is 0), so what the
        judge's calibrated mix weighs follows the reranked order on the scale it was calibrated on."""
        return self.label_mean + self.label_std * np.asarray(fused, np.float64)

    def probability(self, fused: np.ndarray) -> np.ndarray:
        logit = np.clip(self.platt_a * np.asarray(fused, np.float64) + self.platt_b, -60.0, 60.0)  # no overflow
        return 1.0 / (1.0 + np.exp(-logit))

    @classmethod
    def from_dict(cls, values: dict) -> "Scoring":
        return cls(**{name: float(values[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Settings:
    """What reranker.json fixes for inference."""

    document: str
    answer_chars: int
    max_length: int
    scoring: Scoring


@lru_cache(maxsize=4)
def _hash_of(path: str) -> str:
    return model_hash(Path(path))  # hashing 90 MB of weights: once per process


def read_metadata(folder: Path) -> dict:
    """reranker.json of a folder, checked for what inference needs; RerankerError otherwise."""
    folder = Path(folder)
    file = folder / RERANKER_METADATA
    if not file.is_file():
        raise RerankerError(f"{folder}: not a reranker folder (no {RERANKER_METADATA})")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RerankerError(f"{folder}: {RERANKER_METADATA} is not valid JSON ({error})") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise RerankerError(f"{folder}: {RERANKER_METADATA} has format_version {version!r}; this agent-helper "
                            f"reads version {FORMAT_VERSION} (retrain the reranker or update agent-helper)")
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    missing += [key for key in ("base_model", "document", "max_length", "scoring") if key not in meta]
    if missing:
        raise RerankerError(f"{folder}: incomplete reranker folder, missing {', '.join(missing)}")
    if meta["document"].get("format") not in DOCUMENT_FORMATS:
        raise RerankerError(f"{folder}: unknown document format {meta['document'].get('format')!r}; "
                            f"known: {', '.join(DOCUMENT_FORMATS)}")
    return meta


def base_identity_hash(base_path: Path) -> str:
    """The hash a base folder stands for: its declaration's, else its weights'."""
    declared = Path(base_path) / BASE_DECLARATION
    if declared.is_file():
        return str(json.loads(declared.read_text(encoding="utf-8")).get("hash"))
    return _hash_of(str(base_path))


def check_base(folder: Path, meta: dict, base_path: Path) -> None:
    """The adapter only means something on the exact weights it was trained on."""
    expected = meta["base_model"]
    found = base_identity_hash(base_path)
    if expected.get("hash") != found:
        raise RerankerError(f"{folder}: trained on base model {expected.get('name')} with hash {expected.get('hash')}, "
                            f"but {base_path} has hash {found}; retrain the reranker on this base model")


def settings_of(meta: dict) -> Settings:
    document = meta["document"]
    return Settings(document["format"], int(document.get("answer_chars", 0)), int(meta["max_length"]),
                    Scoring.from_dict(meta["scoring"]))


def pair_logits(model, tokenizer, tickets: list[str], texts: list[str], max_length: int,
                batch_size: int = 256) -> np.ndarray:
    """Raw logits for (ticket, text) pairs; batches of similar length, so little padding. The one
    way pairs are encoded and scored, in the product and in training's validation."""
    import torch

    logits = np.zeros(len(texts), np.float32)
    order = np.argsort([len(a) + len(b) for a, b in zip(tickets, texts)], kind="stable")
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            encoded = tokenizer([tickets[i] for i in chosen], [texts[i] for i in chosen], truncation=True,
                                padding=True, max_length=max_length, return_tensors="pt").to(device)
            logits[chosen] = model(**encoded).logits.float().view(-1).cpu().numpy()
    return logits


def load_model(base_path: Path, folder: Path, quantize: bool, device: str = "cpu"):
    """The base with the adapter merged in (and int8 Linear layers when `quantize`, CPU only), in
    eval mode, with its tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head is "newly initialised" until the adapter replaces it
    try:
        base = AutoModelForSequenceClassification.from_pretrained(str(base_path), num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload().eval().to(device)
    if quantize and device == "cpu":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model, AutoTokenizer.from_pretrained(str(base_path))


class Reranker:
    """Loads a reranker folder onto the packaged base model (or `base`); one per process is plenty."""

    def __init__(self, folder: Path, base: Path | None = None, quantize: bool = True, device: str = "cpu"):
        self.folder = Path(folder)
        self.metadata = read_metadata(self.folder)
        self.base_path = Path(base) if base else packaged_model_path()
        check_base(self.folder, self.metadata, self.base_path)
        self.settings = settings_of(self.metadata)
        self.quantized = quantize and device == "cpu"
        self.model, self.tokenizer = load_model(self.base_path, self.folder, quantize, device)
        base_name = PACKAGED_MODEL_NAME if base is None else self.base_path.name
        self.name = f"{base_name}+{self.folder.name}" + (" (int8)" if self.quantized else "")

    def texts(self, candidates: list[Candidate]) -> list[str]:
        s = self.settings
        return [candidate_text(c.question, c.answer, s.document, s.answer_chars) for c in candidates]

    def logits(self, ticket: str, texts: list[str]) -> np.ndarray:
        """Raw cross-encoder logits for (ticket, text) pairs, in one batch."""
        return pair_logits(self.model, self.tokenizer, [ticket] * len(texts), texts, self.settings.max_length,
                           batch_size=max(1, len(texts)))

    def rerank(self, ticket: str, candidates: list[Candidate]) -> list[Candidate]:
        """The candidates best first by the fused score, each with its calibrated `rerank_score` and
        the fused score, on the label vote's scale, as its `rank_score`."""
        if not candidates:
            return []
        logits = self.logits(ticket, self.texts(candidates))
        scoring = self.settings.scoring
        fused = scoring.fused(logits, np.array([c.label_score for c in candidates]))
        probability, ranked = scoring.probability(fused), scoring.on_vote_scale(fused)
        order = np.argsort(-fused, kind="stable")  # ties keep the retriever's order
        return [replace(candidates[i], rank_score=float(ranked[i]), rerank_score=float(probability[i])) for i in order]


def default_reranker_path() -> Path | None:
    """The reranker shipped in data/models/reranker-minilm/ (package agent_helper_models), if present."""
    from agent_helper_models import FOLDER

    folder = FOLDER / SHIPPED_FOLDER
    return folder if (folder / RERANKER_METADATA).is_file() else None


@lru_cache(maxsize=2)
def shared_reranker(folder: str) -> Reranker:
    """One loaded reranker per folder for the whole process (loading costs seconds)."""
    return Reranker(Path(folder))


def shipped_reranker() -> Reranker | None:
    """The shipped reranker, loaded once; None while data/models/reranker-minilm/ holds none."""
    folder = default_reranker_path()
    return shared_reranker(str(folder)) if folder is not None else None
