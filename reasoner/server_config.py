"""Where the judge runs when it runs on an inference server: `JudgeServer`, a field of ModelConfig.

Kept apart from reasoner/served.py (the client) so that configuring a server imports no HTTP client
or model code (the command line builds it before it knows whether it will ask anything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_SERVED_NAME = "judge"
"""The name the README's server commands give the judge (vLLM `--lora-modules judge=…`,
llama.cpp `--model_alias judge`)."""


@dataclass(frozen=True)
class JudgeServer:
    """An OpenAI-compatible inference server that serves the judge's base model and LoRA adapter
    (vLLM, llama.cpp's server, TGI): the judge sends it the prompts it renders itself and reads the
    answer options' probabilities from the returned logprobs (POST <url>/completions)."""

    url: str
    """Base URL of the API, up to and including /v1, e.g. http://127.0.0.1:8000/v1."""
    model: str = DEFAULT_SERVED_NAME
    """The name the judge is served under; with vLLM the LoRA module's name, which selects the adapter."""
    timeout_s: float = 120.0
    """Longest wait for the server's next piece of an answer (a busy server queues requests)."""
    connect_timeout_s: float = 5.0
    top_logprobs: int = 20
    """Most likely tokens asked for at every position: the answer options and the reasoning's
    commitment are read among them. 20 is vLLM's default cap (--max-logprobs)."""
    api_key: str | None = field(default=None, repr=False)
    """Sent as a bearer token (vLLM --api-key); None = no Authorization header."""

    def __post_init__(self):
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"judge server URL must be http(s)://host:port/v1, not {self.url!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if not self.model.strip():
            raise ValueError("the judge server's model name must not be empty")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("judge server timeouts must be positive")
        if self.top_logprobs < 1:
            raise ValueError("top_logprobs must be at least 1")


__all__ = ["DEFAULT_SERVED_NAME", "JudgeServer"]
