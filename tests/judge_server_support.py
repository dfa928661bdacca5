"""What tests/test_judge_server.py and benchmarks/judge_server.py share: a real OpenAI-compatible
server for the judge (llama-cpp-python's, serving a GGUF written by `agent-helper export-gguf`, on a
free local port; the README's llama.cpp command is `LlamaServer.command()`), and the fixed tickets
they judge (`judge_items`).

    with LlamaServer(gguf, log=path).start() as server:
        ... JudgeServer(server.url) ...
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ui_support import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
LLAMA_CPP_MISSING = ("llama-cpp-python[server] is not installed in this Python: `make inference-server` builds it "
                     "into .venv, and `make test` runs that first")


@dataclass
class LlamaServer:
    gguf: Path
    log: Path
    """Where the server's output goes (the error message quotes its end)."""
    port: int = field(default_factory=free_port)
    alias: str = "judge"
    threads: int = 1
    """On 2 busy cores one thread answered in ~2 s where two took ~50 s: ggml's threads wait by
    spinning, and a descheduled one stalls the other."""
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        threads = str(self.threads)
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", self.alias,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
                "--n_threads", threads, "--n_threads_batch", threads,
                # logprobs need every position's logits; and by default a request arriving while another
                # streams cuts that stream short
                "--logits_all", "true", "--interrupt_requests", "false"]

    def start(self, timeout_s: float = 180.0) -> "LlamaServer":
        """Start it and wait until it lists its model; stopped again if it dies or is not up in time."""
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited with {self.process.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the llama.cpp server was not up within {timeout_s:.0f} s: {self._log_tail()}")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> "LlamaServer":
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    def _log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def judge_items(embedder, n: int = 8) -> list[tuple[str, list]]:
    """The first `n` tickets of data/eval_tickets.jsonl, each with its 5 nearest sample FAQs
    (data/samples/faq_pairs.json, by the embedder's cosine similarity) as the judge's candidates."""
    from retriever.candidates import Candidate

    faqs = json.loads((REPO / "data" / "samples" / "faq_pairs.json").read_text(encoding="utf-8"))
    lines = (REPO / "data" / "eval_tickets.jsonl").read_text(encoding="utf-8").splitlines()
    tickets = [json.loads(line)["ticket"] for line in lines if line.strip()][:n]
    similarity = embedder.embed(tickets) @ embedder.embed([f["question"] for f in faqs]).T
    items = []
    for ticket, row in zip(tickets, similarity):
        nearest = sorted(range(len(faqs)), key=lambda j: -row[j])[:5]
        items.append((ticket, [Candidate(f"faq-{j}", faqs[j]["question"], faqs[j]["answer"], faqs[j].get("label"),
                                         faqs[j]["source"], faqs[j].get("page"), round(float(row[j]), 4))
                               for j in nearest]))
    return items
