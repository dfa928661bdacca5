"""The judge on an OpenAI-compatible inference server: the same decoding rules, read from logprobs.

`load_served` gives a LoadedModel whose model is a CompletionsClient (reasoner/completions.py) and
whose tokenizer is loaded here, so the judge renders its prompts itself (reasoner/prompt.py); the
local adapter's agent_helper.json still guards the prompt version and supplies the calibration.

`ServedDecoder` steps reasoner/decoding.py's RowStepper through the tokens the server writes: a
position is a Step, its most likely token the one the server wrote (temperature 0), its
probabilities those of the returned top logprobs (a token not among them counts as 0). The server
writes up to max_new_tokens + 1 tokens, so every position the in-process judge reads is in the
answer. Where in-process decoding would feed tokens of its own (the forced "Answer: "), the
stream is dropped and the one position still needed is asked for: the prompt with the text so far,
max_tokens=1. Concurrent prompts are concurrent requests: the server batches them.

Where the options hold less than MIN_OPTION_MASS of the probability and some are not even among the
returned top logprobs, their split cannot be read: that is a model answering off-format (e.g. an
adapter trained on the other prompt format), and a JudgeServerError says so.
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Sequence

from reasoner.backends import LoadedModel, ModelConfig, ModelInfo, load_tokenizer, read_adapter_metadata
from reasoner.completions import CompletionsClient, JudgeServerError, Step
from reasoner.decoding import DONE, FEED, GENERATE, READ, DecodedRow, DecodingTokens, RowStepper, display_delta
from reasoner.metadata import AdapterMetadata
from reasoner.prompt import PROMPT_VERSION, AnswerLead

BACKEND = "openai-completions"
ENDED = Step("\x00end of answer", {})
"""The position after the server's last token: it stopped (end of turn or max_tokens), which the
rules treat as an end-of-turn token. Its probabilities are unknown (0)."""
MIN_OPTION_MASS = 0.5


@dataclass
class ServedModel(LoadedModel):
    """A LoadedModel whose `model` is a CompletionsClient."""

    def decoder(self, max_new_tokens: int) -> "ServedDecoder":
        return ServedDecoder(self.model, self.tokenizer, max_new_tokens)


def load_served(config: ModelConfig) -> ServedModel:
    """The judge on `config.server`: checks that the server is up and serves the judge's name."""
    server = config.server
    metadata = read_adapter_metadata(Path(config.adapter)) if config.adapter is not None else AdapterMetadata()
    client = CompletionsClient(server)
    client.check_model()
    info = ModelInfo(base=config.base, adapter=str(config.adapter) if config.adapter is not None else None,
                     backend=BACKEND, device=f"{server.model} at {server.url}",
                     prompt_version=metadata.get("prompt_version", PROMPT_VERSION))
    return ServedModel(model=client, tokenizer=load_tokenizer(config), info=info, adapter_metadata=metadata)


class ServedDecoder(RowStepper):
    """Decoder's interface (encode_prompt, decode, choice_ids) over a CompletionsClient."""

    def __init__(self, client: CompletionsClient, tokenizer, max_new_tokens: int):
        self.client, self.tokenizer, self.max_new_tokens = client, tokenizer, max_new_tokens
        ids = DecodingTokens.of(tokenizer)
        self.choice_ids = ids.choices
        # The server names tokens by their text: compare with each id's own text (" Closest" is two
        # tokens in SmolLM2, and the rules look for its first, " Clos").
        piece = self.piece
        self.tokens = DecodingTokens(
            stop=frozenset(map(piece, ids.stop)) | {ENDED.token}, choices=[piece(i) for i in ids.choices],
            commit=tuple(map(piece, ids.commit)),
            forced_tail={lead: tuple([piece(i) for i in tail] for tail in tails) for lead, tails in ids.forced_tail.items()})

    def piece(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def encode_prompt(self, text: str) -> str:
        return text  # sent as text: the server tokenizes it as our tokenizer does (same vocabulary)

    # -- the position hooks of RowStepper ------------------------------------------------------------

    def greedy(self, step: Step) -> str:
        return step.token

    def probabilities(self, step: Step, tokens: Sequence[str]) -> list[float]:
        return [math.exp(step.top[t]) if t in step.top else 0.0 for t in tokens]

    def read_options(self, step: Step, options: Sequence[str]) -> tuple[list[float], float]:
        raw = self.probabilities(step, options)
        mass = sum(raw)
        missing = [o for o in options if o not in step.top]
        if mass <= 0 or (missing and mass < MIN_OPTION_MASS):
            wrote = "nothing: its answer ended there" if step is ENDED else repr(step.token)
            raise JudgeServerError(
                f"the judge server at {self.client.url} answered off-format: where the judge reads its answer, "
                f"the options hold {mass:.2g} of the probability and its {self.client.server.top_logprobs} most likely "
                f"tokens lack {', '.join(map(repr, missing))} (it wrote {wrote}); is "
                f"{self.client.server.model!r} the judge's adapter, on the base and prompt format it was trained on?")
        return [p / mass for p in raw], mass

    def text_of(self, generated: list[str]) -> str:
        return "".join(generated)

    # -- decoding ------------------------------------------------------------------------------------

    def decode(self, prompts: list[str], lead: AnswerLead, option_ids: list[int],
               read_commit: bool = False) -> Generator[tuple[int, str], None, list[DecodedRow]]:
        """As Decoder.decode: yields (row, text delta) as each prompt's reasoning streams in, returns
        the rows. Each prompt is its own request, all at once; the first error ends the call."""
        options = [self.piece(i) for i in option_ids]
        rows = [DecodedRow([]) for _ in prompts]
        events: queue.Queue = queue.Queue()

        def work(r: int) -> None:
            try:
                self._decode_row(prompts[r], rows[r], lead, options, read_commit, lambda d: events.put((r, d)))
                events.put((r, None))
            except BaseException as error:  # handed to the caller's thread
                events.put((r, error))

        for r in range(len(prompts)):
            threading.Thread(target=work, args=(r,), name=f"judge-request-{r}", daemon=True).start()
        pending = len(prompts)
        while pending:
            r, item = events.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                pending -= 1
            else:
                yield r, item
        return rows

    def _decode_row(self, prompt: str, row: DecodedRow, lead: AnswerLead, options: list[str],
                    read_commit: bool, emit) -> None:
        shown = ""

        def step_to(position: Step | None) -> None:
            nonlocal shown
            self.advance(row, position, lead, options, read_commit)
            delta = display_delta(row.text, shown)
            if delta:
                shown += delta
                emit(delta)

        steps = self.client.steps(prompt, self.max_new_tokens + 1)
        try:
            for step in steps:
                step_to(step)
                if row.state in (FEED, DONE):  # done, or from here on tokens of our own are fed
                    break
            else:
                if row.state == GENERATE:
                    step_to(ENDED)
        finally:
            steps.close()
        while row.state == FEED:
            step_to(None)  # feeding needs no position
        if row.state == READ:
            step_to(self._next_position(prompt + row.text))

    def _next_position(self, text: str) -> Step:
        steps = self.client.steps(text, 1)
        try:
            return next(steps, ENDED)
        finally:
            steps.close()


__all__ = ["BACKEND", "ServedDecoder", "ServedModel", "load_served"]
