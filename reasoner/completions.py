"""The judge's client for an OpenAI-compatible `/v1/completions` API (vLLM, llama.cpp's server, TGI).

One call, `CompletionsClient.steps`: a greedy, streamed completion of a prompt we rendered ourselves
(the server applies no chat template), read as the tokens the server wrote, each with the most
likely tokens at its position (`logprobs`). Only the portable part of the protocol is used: the
prompt as text, temperature 0, an integer `logprobs`, `stream`. Every failure is a
JudgeServerError whose message names the server's URL and says what to check.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

from reasoner.backends import ModelLoadError
from reasoner.server_config import JudgeServer

_MAX_ERROR_CHARS = 300


class JudgeServerError(ModelLoadError):
    """The judge's inference server cannot be used (down, too slow, refusing, or answering off-format);
    the message names its URL. A ModelLoadError: like a model that cannot load, the judge is unavailable."""


@dataclass(frozen=True)
class Step:
    """One token of a completion, as the server reports it."""

    token: str
    """The token the server wrote at this position (its text)."""
    top: dict[str, float]
    """The most likely tokens at this position: text -> log-probability (the written one included)."""


class CompletionsClient:
    """Talks to one server; thread-safe (one pooled HTTP client), so concurrent prompts run at once."""

    def __init__(self, server: JudgeServer):
        import httpx

        self.server = server
        headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
        self._http = httpx.Client(timeout=httpx.Timeout(server.timeout_s, connect=server.connect_timeout_s),
                                  headers=headers)

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self._http.close()

    def served_models(self) -> list[str]:
        """The model names the server lists (GET /models)."""
        with self._errors():
            response = self._http.get(f"{self.url}/models")
            self._check_status(response)
            return [str(m.get("id")) for m in _json(response.text, self.url).get("data") or []]

    def check_model(self) -> None:
        """JudgeServerError unless the server is up and lists the judge's model name. (llama.cpp's server
        answers any name with its one model, so a typo would otherwise go unnoticed.)"""
        names = self.served_models()
        if self.server.model not in names:
            raise JudgeServerError(
                f"the judge server at {self.url} does not serve a model named {self.server.model!r} (it serves: "
                f"{', '.join(names) or 'nothing'}); set --judge-model to the name it serves the judge under")

    def steps(self, prompt: str, max_tokens: int) -> Iterator[Step]:
        """The greedy continuation of `prompt`, one Step per token as the server streams it. Closing
        the iterator early closes the stream, which lets the server stop generating."""
        body = {"model": self.server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                "logprobs": self.server.top_logprobs, "stream": True,
                # llama.cpp's server defaults to a repeat penalty of 1.1, which moves its "greedy" tokens
                # away from the model's argmax; 1.0 is everyone else's default (vLLM ignores the field).
                "repeat_penalty": 1.0}
        with self._errors():
            with self._http.stream("POST", f"{self.url}/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                self._check_status(response)
                for event in _events(response.iter_lines()):
                    yield from self._steps_of(_json(event, self.url))

    def _steps_of(self, chunk: dict) -> list[Step]:
        if chunk.get("error"):
            raise JudgeServerError(f"the judge server at {self.url} reported an error: {chunk['error']}")
        choice = (chunk.get("choices") or [{}])[0]
        logprobs = choice.get("logprobs") or {}
        tokens, tops = logprobs.get("tokens") or [], logprobs.get("top_logprobs") or []
        if choice.get("text") and not tokens:
            raise JudgeServerError(
                f"the judge server at {self.url} returned text without logprobs, so the judge cannot read its "
                "confidence; serve the model with logprobs enabled (llama.cpp: --logits_all true)")
        if len(tops) != len(tokens):
            raise JudgeServerError(f"the judge server at {self.url} returned {len(tokens)} tokens but "
                                   f"{len(tops)} top_logprobs entries")
        return [Step(str(token), {str(k): float(v) for k, v in (top or {}).items()})
                for token, top in zip(tokens, tops)]

    def _check_status(self, response) -> None:
        if response.status_code == 200:
            return
        hint = ""
        if response.status_code == 404:
            hint = f" (is the judge served as {self.server.model!r}? GET {self.url}/models lists the names)"
        raise JudgeServerError(f"the judge server at {self.url} answered HTTP {response.status_code}{hint}: "
                               f"{response.text[:_MAX_ERROR_CHARS]}")

    @contextmanager
    def _errors(self):
        """httpx's exceptions as JudgeServerError, naming the URL."""
        import httpx

        try:
            yield
        except httpx.ConnectError as error:
            raise JudgeServerError(f"cannot reach the judge server at {self.url}: {error} (is it running?)") from error
        except httpx.TimeoutException as error:
            raise JudgeServerError(
                f"the judge server at {self.url} did not answer within {self.server.timeout_s:g} s "
                f"({type(error).__name__}); it may be overloaded, or raise --judge-timeout") from error
        except httpx.HTTPError as error:
            raise JudgeServerError(f"the judge server at {self.url} failed: {type(error).__name__}: {error}") from error


def _events(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event, up to "[DONE]"."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        yield data


def _json(text: str, url: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise JudgeServerError(f"the judge server at {url} sent something that is not JSON: "
                               f"{text[:_MAX_ERROR_CHARS]!r}") from error
    if not isinstance(value, dict):
        raise JudgeServerError(f"the judge server at {url} sent JSON that is not an object: {text[:_MAX_ERROR_CHARS]!r}")
    return value


__all__ = ["CompletionsClient", "JudgeServerError", "Step"]
