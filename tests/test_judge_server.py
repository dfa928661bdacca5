"""The judge on a real OpenAI-compatible inference server (reasoner/served.py): llama.cpp's server, started
here, serving the embedded SmolLM2 with the shipped adapter merged (`export_gguf`, as `agent-helper
export-gguf` writes it). It gives the in-process judge's verdicts and streams its reasoning; a server
that is down, too slow, serves another name or answers off-format is a clear error naming its URL.

llama-cpp-python must be installed (`make test` builds it): without it these tests fail, they never skip.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
from judge_server_support import LLAMA_CPP_MISSING, LlamaServer, free_port, judge_items

from reasoner.backends import ModelConfig, default_adapter_path, load_model
from reasoner.completions import CompletionsClient, JudgeServerError
from reasoner.gguf_export import export_gguf
from reasoner.judge import Judge, JudgeConfig
from reasoner.served import BACKEND, ServedModel
from reasoner.server_config import JudgeServer
from ui.settings import JUDGE_MODEL_ENV, JUDGE_URL_ENV, SettingsError, resolve_judge_server

# Judged in one concurrent batch on each side: 8 requests at once reach the server.
N_TICKETS = 8
PROBABILITY_TOLERANCE = 0.02
"""ggml's kernels are not torch's: measured |dp| <= 1.6e-3 on a candidate's judge probability."""


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The shipped judge in this process, in float32: the weights the GGUF holds, whatever dtype the
    rest of the suite runs in."""
    return load_model(ModelConfig(adapter=default_adapter_path(), dtype="float32",
                                  cache_dir=tmp_path_factory.getbasetemp() / "agent-helper-models"))


@pytest.fixture(scope="module")
def llama_server(in_process, tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail(LLAMA_CPP_MISSING)
    folder = tmp_path_factory.mktemp("judge-gguf")
    server = LlamaServer(export_gguf(in_process, folder / "judge.gguf"), log=folder / "llama-server.log")
    try:
        yield server.start()
    finally:
        server.stop()


def served(server_url: str, **options):
    return load_model(ModelConfig(adapter=default_adapter_path(), server=JudgeServer(server_url, **options)))


@pytest.fixture(scope="module")
def items(embedder):
    return judge_items(embedder, N_TICKETS)


def _decision(verdict):
    return verdict.match.id if verdict.match else None, verdict.escalate


def test_the_served_judge_gives_the_in_process_verdicts(in_process, llama_server, items):
    model = served(llama_server.url)
    assert model.info.backend == BACKEND and llama_server.url in model.info.describe()
    config = JudgeConfig.from_metadata(in_process.adapter_metadata, route=False)  # the model decides every ticket
    local = Judge(in_process, config).decide_many(items, batch_size=N_TICKETS)
    remote = Judge(model, config).decide_many(items, batch_size=N_TICKETS)
    assert [_decision(v) for v in remote] == [_decision(v) for v in local]
    assert {v.decided_by for v in remote} == {"judge"} and any(v.escalate for v in local) and any(v.match for v in local)
    for one, other in zip(local, remote):
        assert [c.judge_probability for c in other.candidates] == pytest.approx(
            [c.judge_probability for c in one.candidates], abs=PROBABILITY_TOLERANCE)
        assert other.confidence == pytest.approx(one.confidence, abs=PROBABILITY_TOLERANCE)
    same_text = sum(one.raw_output == other.raw_output for one, other in zip(local, remote))
    largest = max(abs(c.judge_probability - d.judge_probability)
                  for one, other in zip(local, remote) for c, d in zip(one.candidates, other.candidates))
    print(f"reasoning written identically on {same_text}/{len(items)} tickets; judge probabilities within {largest:.1e}")


def test_the_served_judge_streams_its_reasoning(llama_server, items):
    judge = Judge(served(llama_server.url), JudgeConfig(route=False))
    *pieces, verdict = judge.stream(*items[0])
    assert len(pieces) > 3 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == verdict.reasoning and verdict.raw_output.endswith("\nAnswer: ")


def test_a_tiny_budget_forces_the_answer_as_in_process(in_process, llama_server, items):
    """Past max_new_tokens the judge feeds "Answer: " itself: the server is asked once more, at that point."""
    config = JudgeConfig.from_metadata(in_process.adapter_metadata, route=False, max_new_tokens=4)
    local = Judge(in_process, config).decide_many(items[:2])
    remote = Judge(served(llama_server.url), config).decide_many(items[:2])
    for one, other in zip(local, remote):
        assert any("forced 'Answer:'" in note for note in other.notes)
        assert other.raw_output == one.raw_output and other.raw_output.endswith("\nAnswer: ")
        assert _decision(other) == _decision(one)


def test_a_server_that_is_down_is_a_clear_error(in_process, items):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(JudgeServerError, match=f"cannot reach the judge server at {re.escape(url)}"):
        served(url)
    # a server that goes away once the judge is loaded
    gone = ServedModel(CompletionsClient(JudgeServer(url)), in_process.tokenizer, in_process.info,
                       in_process.adapter_metadata)
    with pytest.raises(JudgeServerError, match=f"cannot reach the judge server at {re.escape(url)}"):
        Judge(gone, JudgeConfig(route=False)).decide(*items[0])


def test_a_server_that_is_too_slow_is_a_clear_timeout(llama_server, items):
    with pytest.raises(JudgeServerError, match=rf"judge server at {re.escape(llama_server.url)} did not answer "
                                               r"within 0\.05 s"):
        Judge(served(llama_server.url, timeout_s=0.05), JudgeConfig(route=False)).decide(*items[0])


def test_a_name_the_server_does_not_serve_is_a_clear_error(llama_server):
    # llama.cpp's server would answer any name with its one model: the judge checks the name first
    with pytest.raises(JudgeServerError, match=rf"{re.escape(llama_server.url)} does not serve a model named "
                                               r"'no-such-judge' \(it serves: judge\)"):
        served(llama_server.url, model="no-such-judge")


def test_an_off_format_answer_is_a_clear_error(llama_server, items):
    """The shipped adapter was trained on the listwise prompt: asked pairwise, it hardly writes
    " same" or " different" where the verdict is read, and " different" is not among its top tokens."""
    judge = Judge(served(llama_server.url), JudgeConfig(prompt_format="pairwise", max_new_tokens=8, route=False))
    with pytest.raises(JudgeServerError, match=rf"judge server at {re.escape(llama_server.url)} answered off-format"):
        judge.decide(*items[0])


def test_the_judge_server_settings(monkeypatch):
    monkeypatch.delenv(JUDGE_URL_ENV, raising=False)
    monkeypatch.delenv(JUDGE_MODEL_ENV, raising=False)
    assert resolve_judge_server(None) is None
    server = resolve_judge_server("http://gpu-box:8000/v1/", timeout_s=30)
    assert (server.url, server.model, server.timeout_s) == ("http://gpu-box:8000/v1", "judge", 30)
    monkeypatch.setenv(JUDGE_URL_ENV, "http://127.0.0.1:8000/v1")
    monkeypatch.setenv(JUDGE_MODEL_ENV, "judge-v2")
    assert resolve_judge_server(None) == JudgeServer("http://127.0.0.1:8000/v1", "judge-v2")
    with pytest.raises(SettingsError, match="must be http"):
        resolve_judge_server("gpu-box:8000")
    monkeypatch.delenv(JUDGE_URL_ENV)
    with pytest.raises(SettingsError, match="needs the server's URL"):
        resolve_judge_server(None, "judge")


def test_ask_names_the_url_of_a_judge_server_that_is_down(tmp_path, capsys):
    from ui.cli import main

    url = f"http://127.0.0.1:{free_port()}/v1"
    code = main(["--home", str(tmp_path / "home"), "ask", "where is my parcel", "--judge-url", url])
    assert code == 1 and f"cannot reach the judge server at {url}" in capsys.readouterr().err
