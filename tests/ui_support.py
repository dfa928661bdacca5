"""Shared by the web/API/browser tests: a tiny knowledge base, one real judge per test session.

The judge is the real embedded model (SmolLM2-135M-Instruct via reasoner.backends), no adapter, with a
short reasoning budget to keep the suite fast; its bf16 copy is cached under the system temp folder,
so only the first run on a machine pays the GGUF conversion. Services over different homes share the
loaded model (app/judges.py keeps one per process and configuration).
"""

from __future__ import annotations

import csv
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

MODEL_CACHE = Path(tempfile.gettempdir()) / "agent-helper-test-models"

FAQ_ROWS = [
    ("pw-reset", "How do I reset my password?",
     "Open the sign-in page, choose 'Forgot password' and follow the link we email you within 5 minutes.",
     "password_reset"),
    ("card-lost", "I lost my card, what should I do?",
     "Freeze the card at once in the app under Cards > Freeze, then order a replacement; it arrives in 3 to 5 days.",
     "lost_card"),
    ("refund-time", "How long does a refund take?",
     "Refunds reach your account 5 to 10 working days after we approve them.", "refund_timing"),
    ("close-account", "How can I close my account?",
     "Write to support from the app's Help section and ask us to close the account; any balance is paid out.",
     "close_account"),
    ("change-address", "How do I change my postal address?",
     "Go to Profile > Personal details > Address, enter the new address and confirm it with the code we text you.",
     "change_address"),
    ("delivery-time", "When will my order arrive?",
     "Standard delivery takes 2 to 4 working days; the tracking link is in your confirmation email.",
     "delivery_time"),
]

MATCH_TICKET = "How do I reset my password?"
MATCH_ANSWER = FAQ_ROWS[0][2]


def write_faq_csv(path: Path, rows=FAQ_ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "question", "answer", "label"])
        writer.writerows(rows)
    return path


def model_config():
    from conftest import judge_dtype
    from reasoner.backends import ModelConfig

    return ModelConfig(base="embedded", adapter=None, cache_dir=MODEL_CACHE, dtype=judge_dtype())


def judge_config():
    from reasoner.judge import JudgeConfig

    return JudgeConfig(max_new_tokens=24)


def make_service(root: Path, *, ingest: bool = True):
    """An AgentHelper over a fresh home at `root`, the tiny FAQ ingested."""
    from app.home import Home
    from app.service import AgentHelper

    service = AgentHelper(Home(root), model_config(), judge_config())
    if ingest:
        results = service.ingest([write_faq_csv(root.parent / f"{root.name}-faq.csv")])
        assert all(r.ok for r in results), [r.message() for r in results]
    return service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: "subprocess.Popen | None", timeout_s: float = 20.0) -> None:
    """Terminate a server the test started, killing it if it does not go in time."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


class ServerThread:
    """uvicorn serving an ASGI app on 127.0.0.1 in a background thread."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class one_torch_thread:
    """Decode with one torch thread while the tests run: on a shared 2-core machine, two OpenMP threads
    spin against other processes and made each answer ~8x slower (measured 40 s vs 4.5 s)."""

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)
