"""The knowledge base on a real Chroma server (`chroma run`, started here on a free loopback port):
app processes with different homes share it, a down server is one clear error, and an ingest the
server cut off leaves no half-written document."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from ingest.pipeline import ADDED, UNCHANGED, ingest_file
from retriever.chroma_client import ChromaServer
from retriever.chunks import ROW, ChunkRecord, chunk_metadata, new_document
from retriever.hybrid import HybridRetriever
from retriever.store import EMBED_BATCH, STALE_INGEST_S, KnowledgeStore
from ui_support import free_port, stop_process, write_faq_csv

REPO = Path(__file__).resolve().parents[1]
CHROMA = Path(sys.executable).with_name("chroma")  # the CLI that ships in the chromadb package
START_TIMEOUT_S = 60.0


class ChromaProcess:
    """`chroma run` on 127.0.0.1 as a subprocess; `stop` then `start` again is a server restart
    (same data folder, same port)."""

    def __init__(self, data: Path, log: Path):
        self.data, self.log, self.port = data, log, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [str(CHROMA), "run", "--path", str(self.data), "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._beats():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                pytest.fail(f"chroma run did not answer within {START_TIMEOUT_S:.0f} s:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def _beats(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process, timeout_s=15)
        self.process = None


@pytest.fixture
def chroma(tmp_path):
    if not CHROMA.exists():
        pytest.fail(f"no chroma CLI beside {sys.executable} (it ships in the chromadb package)")
    server = ChromaProcess(tmp_path / "chroma-data", tmp_path / "chroma.log")
    server.start()
    yield server
    server.stop()


def cli(home: Path, url: str, *args: str, url_from_env: bool = False) -> subprocess.CompletedProcess:
    """One `agent-helper` process on `home`, pointed at the server by --chroma-url or by the env var."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("AGENT_HELPER_CHROMA_URL", None)
    option = []
    if url_from_env:
        env["AGENT_HELPER_CHROMA_URL"] = url
    else:
        option = ["--chroma-url", url]
    return subprocess.run([sys.executable, "-m", "ui.cli", "--home", str(home), *option, *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300, env=env)


def error_lines(stderr: str) -> list[str]:
    """What the CLI itself wrote (libraries draw loading bars on stderr too)."""
    return [line for line in stderr.splitlines() if line.startswith("agent-helper")]


def open_store(home: Path, url: str, embedder) -> KnowledgeStore:
    return KnowledgeStore(home, embedder, server=ChromaServer.from_url(url))


def write_big_csv(path: Path, rows: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "label"])
        writer.writerows((f"Question {i} about product {i % 97}?", f"Answer {i}.", f"l{i % 50}") for i in range(rows))
    return path


# -- two app processes, one server ----------------------------------------------------------------


def test_two_processes_share_one_knowledge_base(chroma, tmp_path):
    faq, a, b = write_faq_csv(tmp_path / "faq.csv"), tmp_path / "home-a", tmp_path / "home-b"

    added = cli(a, chroma.url, "ingest", str(faq))
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added") and "6 rows" in added.stdout

    listed = cli(b, chroma.url, "docs", "--json", url_from_env=True)
    assert listed.returncode == 0, listed.stderr
    (doc,) = json.loads(listed.stdout)
    assert doc["name"] == "faq.csv" and doc["chunks"] == 6

    found = cli(b, chroma.url, "search", "I forgot my password, how do I reset it?", "--json")
    assert found.returncode == 0, found.stderr
    top = json.loads(found.stdout)[0]
    assert top["label"] == "password_reset" and top["source"] == "faq.csv"

    again = cli(b, chroma.url, "ingest", str(faq))
    assert again.returncode == 0 and again.stdout.startswith("unchanged"), again.stdout + again.stderr

    deleted = cli(b, chroma.url, "delete", doc["id"])
    assert deleted.returncode == 0 and deleted.stdout.startswith(f"deleted {doc['id']} faq.csv"), deleted.stderr
    assert json.loads(cli(a, chroma.url, "docs", "--json").stdout) == []
    gone = cli(a, chroma.url, "search", "I forgot my password, how do I reset it?", "--json")
    assert gone.returncode == 0 and json.loads(gone.stdout) == [], gone.stderr
    # The knowledge base lived on the server: neither home holds chunks or a registry.
    for home in (a, b):
        assert not (home / "chroma").exists() and not (home / "registry.sqlite").exists()


def test_a_running_process_follows_the_other_ones_changes(chroma, tmp_path, embedder):
    """A long-lived retriever (a server's) sees another process's ingest and delete at its next search:
    its BM25 index is keyed on the registry's state on the server, not on a counter of its own."""
    store_a = open_store(tmp_path / "home-a", chroma.url, embedder)
    store_b = open_store(tmp_path / "home-b", chroma.url, embedder)
    retriever_b = HybridRetriever(store_b)
    ticket = "I forgot my password, how do I reset it?"
    assert retriever_b.search(ticket) == []
    before = store_b.generation

    result = ingest_file(store_a, write_faq_csv(tmp_path / "faq.csv"))
    assert result.status == ADDED
    assert store_b.generation != before
    assert retriever_b.search(ticket)[0].label == "password_reset"
    assert len(retriever_b._bm25_index().ids) == 6

    assert ingest_file(store_b, tmp_path / "faq.csv").status == UNCHANGED
    store_b.delete_document(result.document.id)
    assert store_a.documents() == [] and store_a.count() == 0
    assert HybridRetriever(store_a).search(ticket) == [] and retriever_b.search(ticket) == []


# -- a server that is down or goes away -----------------------------------------------------------


def test_a_down_server_is_one_clear_error_and_nothing_is_written(chroma, tmp_path):
    faq, home = write_faq_csv(tmp_path / "faq.csv"), tmp_path / "home"
    chroma.stop()
    for args in (("ingest", str(faq)), ("docs",)):
        run = cli(home, chroma.url, *args)
        assert run.returncode == 1, run.stdout + run.stderr
        (line,) = error_lines(run.stderr)
        assert line.startswith(f"agent-helper {args[0]}: Chroma server at {chroma.url} is not reachable: "), line
        assert "Traceback" not in run.stderr
    chroma.start()
    listed = cli(home, chroma.url, "docs", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr


def test_the_api_answers_503_naming_a_down_server(chroma, tmp_path, embedder):
    from fastapi.testclient import TestClient

    import ui_support as us
    from app.home import Home
    from app.service import AgentHelper
    from ui.server import create_app
    from ui.settings import ServerSettings

    home = Home(tmp_path / "home", embedder_adapter=None, chroma_server=ChromaServer.from_url(chroma.url))
    service = AgentHelper(home, us.model_config(), us.judge_config())
    faq = write_faq_csv(tmp_path / "faq.csv").read_bytes()
    with TestClient(create_app(service, ServerSettings(warm_up=False))) as client:
        assert client.get("/api/v1/documents").json() == []
        chroma.stop()
        unreachable = f"Chroma server at {chroma.url} is not reachable: "
        listed = client.get("/api/v1/documents")
        assert listed.status_code == 503 and listed.json()["detail"].startswith(unreachable), listed.text
        uploaded = client.post("/api/v1/documents", files=[("files", ("faq.csv", faq, "text/csv"))])
        assert uploaded.status_code == 503 and uploaded.json()["detail"].startswith(unreachable), uploaded.text
        assert list(home.uploads.iterdir()) == []  # the upload was not kept either
        chroma.start()  # the client reconnects by itself
        assert client.get("/api/v1/documents").json() == []


def test_an_ingest_the_server_cut_off_leaves_no_document(chroma, tmp_path, embedder):
    rows = 8 * EMBED_BATCH
    big = write_big_csv(tmp_path / "big.csv", rows)
    # --embedder base: the embedder of the store this test opens itself below.
    command = [sys.executable, "-m", "ui.cli", "--home", str(tmp_path / "home-a"), "--chroma-url", chroma.url,
               "--embedder", "base", "ingest", str(big)]
    ingest = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    try:
        _wait_for_chunks(chroma.url, EMBED_BATCH, ingest)
        chroma.stop()  # mid-ingest: some batches are stored, the rest are not
        out, err = ingest.communicate(timeout=300)
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait(timeout=15)
    assert ingest.returncode == 1, out + err
    (line,) = error_lines(err)
    assert line.startswith(f"agent-helper ingest: Chroma server at {chroma.url} is not reachable: "), line

    chroma.start()  # the restart: same data, same port
    store = open_store(tmp_path / "home-b", chroma.url, embedder)
    assert store.documents() == []
    (leftover,) = store.registry.unfinished()  # too young to be taken for a dead ingest on open
    again = ingest_file(store, big)
    assert again.status == ADDED and again.document.id == leftover
    assert store.registry.unfinished() == []
    assert store.count() == rows and [d.chunks for d in store.documents()] == [rows]


def _wait_for_chunks(url: str, at_least: int, ingest: subprocess.Popen, timeout: float = 240.0) -> None:
    import chromadb
    from chromadb.config import Settings

    server = ChromaServer.from_url(url)
    client = chromadb.HttpClient(host=server.host, port=server.port, settings=Settings(anonymized_telemetry=False))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ingest.poll() is None:
        names = [c.name for c in client.list_collections()]
        if "knowledge" in names and client.get_collection("knowledge").count() >= at_least:
            return
        time.sleep(0.05)
    pytest.fail(f"the ingest stored no {at_least} chunks in {timeout:.0f} s (exit code {ingest.poll()})")


def test_stale_leftovers_are_removed_on_open(chroma, tmp_path, embedder):
    """An ingest begun STALE_INGEST_S ago and never finished is a dead one: the next open removes it."""
    store = open_store(tmp_path / "home-a", chroma.url, embedder)
    chunks = [ChunkRecord(ROW, "Where is my parcel?", "Track it in the app.")]
    doc = replace(new_document("dead.csv", "f" * 64, 0, chunks), added_at=time.time() - STALE_INGEST_S - 60)
    store.registry.begin(doc)  # what a process that died mid-ingest leaves: a record and some chunks
    store.collection.add(ids=[f"{doc.id}:000000"], embeddings=embedder.embed([chunks[0].question]),
                         documents=[chunks[0].question], metadatas=[chunk_metadata(doc, chunks[0])])
    assert store.count() == 1
    reopened = open_store(tmp_path / "home-b", chroma.url, embedder)
    assert reopened.registry.unfinished() == [] and reopened.count() == 0


def test_chroma_url_must_be_a_server_url():
    from ui.settings import SettingsError, resolve_chroma_server

    assert resolve_chroma_server("http://127.0.0.1:8123/").url == "http://127.0.0.1:8123"
    assert resolve_chroma_server("http://chroma.internal").port == 8000
    for bad in ("127.0.0.1:8000", "ftp://host:21", "http://host:8000/api", "http://host:notaport"):
        with pytest.raises(SettingsError, match="Chroma server URL"):
            resolve_chroma_server(bad)
