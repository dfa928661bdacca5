"""Many agents at once: tickets that reach the judge close together are decoded as one batch.

A request waits at most `window_s` for company (none when it comes alone and the judge is idle:
the window only starts when a batch is collected), then the batch is decoded together
(`Judge.stream_many`), each request still receiving its own reasoning as it is written. A request
that arrives while a batch is decoding waits for that one batch, never for a queue of single
decodes. Batch composition does not change a verdict: in float32 a ticket decodes to the same
tokens and probabilities alone or in a batch (tests/test_judge.py bounds the difference).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from reasoner.judge import Judge
from reasoner.verdict import Verdict
from retriever.candidates import Candidate


@dataclass
class _Request:
    ticket: str
    candidates: Sequence[Candidate]
    out: queue.Queue = field(default_factory=queue.Queue)
    """Reasoning pieces (str), then the Verdict, or the exception that ended the batch."""


class JudgeBatcher:
    """Coalesces concurrent `stream` calls on one judge into batched decodes (one worker thread)."""

    def __init__(self, judge: Judge, window_s: float = 0.02, max_batch: int = 8):
        self.judge, self.window_s, self.max_batch = judge, window_s, max_batch
        self._incoming: queue.Queue[_Request] = queue.Queue()
        self._start = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batch_sizes: list[int] = []
        """Sizes of the batches decoded so far (the web load benchmark reports them)."""

    def stream(self, ticket: str, candidates: Sequence[Candidate]) -> Iterator[str | Verdict]:
        """Reasoning pieces for this ticket as the model writes them, then its Verdict. ValueError
        at once for an empty ticket (it never joins, so never fails, a batch)."""
        self.judge.check_ticket(ticket)
        request = _Request(ticket, list(candidates))
        self._ensure_worker()
        self._incoming.put(request)
        while True:
            item = request.out.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Verdict):
                return

    def _ensure_worker(self) -> None:
        with self._start:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="judge-batcher", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            self._decode(self._collect())

    def _collect(self) -> list[_Request]:
        batch = [self._incoming.get()]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._incoming.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _decode(self, batch: list[_Request]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            decoding = self.judge.stream_many([(r.ticket, r.candidates) for r in batch])
            while True:
                try:
                    index, piece = next(decoding)
                except StopIteration as stop:
                    verdicts = stop.value
                    break
                batch[index].out.put(piece)
            for request, verdict in zip(batch, verdicts):
                request.out.put(verdict)
        except Exception as error:  # the requests of this batch get the error; the worker goes on
            for request in batch:
                request.out.put(error)


__all__ = ["JudgeBatcher"]
