"""Ingest progress on the terminal: a tqdm bar per file and stage (reading or OCR, embedding)."""

from __future__ import annotations

from pathlib import Path


def progress_bars():
    """A tqdm bar per file and stage; returns the `progress_for(path)` the pipeline wants, and
    `close()` for the bars a failure left open (else the error is printed on a bar's line)."""
    from tqdm import tqdm

    from ingest.progress import EMBEDDING, OCR, READING

    every: list[tqdm] = []

    def progress_for(path: Path):
        bars: dict[str, tqdm] = {}

        def update(stage: str, done: int, total: int) -> None:
            key = READING if stage == OCR else stage  # one bar of pages, whether read or OCR'd
            bar = bars.get(key)
            if bar is None:
                bar = bars[key] = tqdm(total=total, desc=f"{stage} {path.name}", unit="chunk"
                                       if stage == EMBEDDING else "page", leave=False)
                every.append(bar)
            bar.set_description(f"{stage} {path.name}", refresh=False)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update

    def close() -> None:
        for bar in every:
            bar.close()

    return progress_for, close


__all__ = ["progress_bars"]
