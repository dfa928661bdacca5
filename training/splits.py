"""The one seeded split: which texts are held out. Every recipe and the benchmarks' eval sets use it.

`fraction(text, seed)` is a stable number in [0, 1) for a text; a text is held out when its
fraction is below the share. The number is the SHA-1 of the text read as a decimal fraction from
its last digit on (0.d1 d2 d3 … where d1 is the last decimal digit of the hash, d2 the one before):
so share 0.1 holds out exactly the texts whose hash ends in 0, the rule the eval sets of
benchmarks/make_eval_sets.py have always used (`seed=None`: the raw text is hashed, so those
held-out sets never change), and any other share splits the same way.

With a seed, the hash is of "<seed>\\x1f<normalised text>": texts that differ only in case or
spacing land on the same side, and another seed gives another split.
"""

from __future__ import annotations

import hashlib

_DIGITS = 15


def text_key(text: str) -> str:
    """Normalised text: two rows with the same key are the same text for splitting and leaks."""
    return " ".join(text.lower().split())


def text_hash(text: str) -> str:
    return hashlib.sha1(text_key(text).encode("utf-8")).hexdigest()


def fraction(text: str, seed: int | str | None = None) -> float:
    """A stable number in [0, 1) for `text` (see the module docstring)."""
    key = text if seed is None else f"{seed}\x1f{text_key(text)}"
    value = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 10**_DIGITS
    return int(str(value).zfill(_DIGITS)[::-1]) / 10**_DIGITS


def held_out(text: str, share: float, seed: int | str | None = None) -> bool:
    """Whether `text` falls in the held-out `share` (validation, or an eval set)."""
    return fraction(text, seed) < share


__all__ = ["fraction", "held_out", "text_hash", "text_key"]
