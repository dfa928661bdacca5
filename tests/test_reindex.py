"""Re-indexing with another embedder: the swap, kills at any point, refusals, the CLI's choice of embedder.

The second embedder is real: the packaged MiniLM with a randomly initialised LoRA adapter, saved
the way training saves one (peft files + embedder.json), so its vectors really differ from base.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import ingest_paths
from retriever.hybrid import HybridRetriever
from retriever.reindex import EMPTY, REINDEXED, UP_TO_DATE, reindex
from retriever.store import KnowledgeStore, StoreError

REPO = Path(__file__).resolve().parents[1]
ESCALATE_BELOW = 0.3

TOPICS = [
    ("password", "How do I reset my password?", "I forgot my login password, what now?",
     "Use the 'Forgot password' link on the sign-in page."),
    ("track", "Where is my parcel?", "My order has not arrived yet, where is it?",
     "Track it from Orders > Track delivery with your order number."),
    ("refund", "Can I get a refund?", "I want my money back for this purchase",
     "Refunds are paid to the original card within 5 working days."),
    ("close", "How do I close my account?", "Please delete my account for good",
     "Write to support and we close it within 48 hours."),
    ("card_lost", "I lost my card, what should I do?", "My debit card was stolen",
     "Freeze the card in the app under Cards > Freeze and order a new one."),
    ("address", "How do I change my postal address?", "I moved house, how do I update my address?",
     "Go to Profile > Address and confirm the new one with the code we text you."),
    ("fees", "Do you charge a fee for transfers abroad?", "How much does an international transfer cost?",
     "Transfers abroad cost 0.5% with a minimum of 1 EUR."),
    ("pin", "How can I change my card PIN?", "I want a new PIN for my card",
     "Change the PIN at any cash machine of our bank or in the app."),
    ("limit", "Can I raise my spending limit?", "My card limit is too low",
     "Raise it under Cards > Limits; higher limits need an identity check."),
    ("statement", "Where do I find my monthly statement?", "I need a PDF of last month's transactions",
     "Statements are under Accounts > Documents, one PDF per month."),
    ("currency", "Which currencies can I hold?", "Can I keep dollars in my account?",
     "You can hold EUR, USD, GBP and CHF balances."),
    ("cancel_order", "How do I cancel an order?", "I ordered by mistake and want to cancel",
     "Orders can be cancelled from Orders > Cancel until they ship."),
    ("invoice", "Can I get an invoice with my company name?", "I need a VAT invoice for my business",
     "Add your company details under Profile > Billing before ordering."),
    ("warranty", "How long is the warranty?", "My device broke after six months, is it covered?",
     "Every device has a two-year warranty from the delivery date."),
    ("shipping_time", "When will my order arrive?", "How many days does delivery take?",
     "Standard delivery takes 2 to 4 working days."),
    ("app_crash", "The app crashes when I open it", "Your mobile app keeps closing on start",
     "Update the app to the latest version and restart your phone."),
    ("two_factor", "How do I turn on two-factor authentication?", "I want a second login step for safety",
     "Turn it on under Security > Two-factor and scan the QR code."),
    ("interest", "What interest do you pay on savings?", "How much do I earn on my savings account?",
     "Savings earn 2.1% a year, paid monthly."),
    ("overdraft", "Can I get an overdraft?", "I need to go below zero on my account sometimes",
     "Apply under Accounts > Overdraft; we answer within a day."),
    ("contact", "How can I talk to a person?", "Is there a phone number for support?",
     "Chat with us in the app or call 0800 123 456, 8am to 8pm."),
]
EXTRA_ROWS = [
    {"id": "T-1", "question": "Do you ship to Canada?", "answer": "Yes, in 7-10 days.", "label": "canada"},
    {"id": "T-2", "question": "Is gift wrapping available?", "answer": "Yes, for 3 EUR at checkout."},
]
TICKETS = ["How do I reset my password?", "Where is my parcel?", "Do you ship to Canada?",
           "How long is the warranty?"]

# Runs reindex in a child process that can be killed where the test wants it:
#   first-batch: print after each written batch and stop after the first (the test kills it);
#   before-drop: kill itself at the moment the old collection would be dropped (after the swap).
CHILD = """
import os, signal, sys, time
from pathlib import Path
from retriever.embedder import shared_embedder
from retriever.reindex import reindex
from retriever.store import KnowledgeStore

home, adapter, stop = sys.argv[1:4]
store = KnowledgeStore(Path(home), shared_embedder(None, adapter), check_embedder=False)

def progress(done, total):
    print(f"written {done}/{total}", flush=True)
    if stop == "first-batch":
        time.sleep(600)

if stop == "before-drop":
    store._client.delete_collection = lambda name: os.kill(os.getpid(), signal.SIGKILL)
reindex(store, batch_size=5, progress=progress)
print("finished", flush=True)
"""


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def adapter(tmp_path_factory) -> Path:
    """A real LoRA adapter on the packaged MiniLM, as training would save it."""
    import torch
    from peft import LoraConfig
    from sentence_transformers import SentenceTransformer

    from retriever.embedder import packaged_model_path

    folder = tmp_path_factory.mktemp("embedder-adapter")
    torch.manual_seed(7)
    model = SentenceTransformer(str(packaged_model_path()), device="cpu")
    model.add_adapter(LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False))
    model.save_pretrained(str(folder))
    (folder / "embedder.json").write_text(json.dumps({"escalate_below": ESCALATE_BELOW}))
    return folder


@pytest.fixture(scope="session")
def adapted(adapter):
    from retriever.embedder import shared_embedder

    return shared_embedder(None, str(adapter))


def knowledge_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, jsonl_path = folder / "faq.csv", folder / "tickets.jsonl"
    lines = ["question,answer,label"]
    for label, first, second, answer in TOPICS:
        lines += [f'"{first}","{answer}",{label}', f'"{second}","{answer}",{label}']
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    jsonl_path.write_text("\n".join(json.dumps(r) for r in EXTRA_ROWS) + "\n", encoding="utf-8")
    return [csv_path, jsonl_path]


def build_home(tmp_path: Path, embedder) -> Path:
    """A home built with `embedder`: 42 chunks in two documents."""
    home = tmp_path / "home"
    store = KnowledgeStore(home, embedder)
    results = ingest_paths(store, knowledge_files(tmp_path / "files"))
    assert all(r.ok for r in results), [r.message() for r in results]
    assert store.count() == 2 * len(TOPICS) + len(EXTRA_ROWS)
    store.close()
    return home


def top_answers(store: KnowledgeStore) -> list[tuple[str, str]]:
    retriever = HybridRetriever(store)
    return [(c.id, c.answer) for c in (retriever.search(t, k=3)[0] for t in TICKETS)]


def all_chunks(store: KnowledgeStore) -> list[tuple[str, str, dict]]:
    return sorted(chunk for page in store.iter_chunks(page_size=7) for chunk in page)


def collections(home: Path) -> list[str]:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(home / "chroma"), settings=Settings(anonymized_telemetry=False))
    return sorted(c.name for c in client.list_collections())


def cli(home: Path, *args: str, embedder: str | Path | None = None) -> subprocess.CompletedProcess:
    prefix = ["--embedder", str(embedder)] if embedder is not None else []
    return subprocess.run(
        [sys.executable, "-m", "ui.cli", "--home", str(home), *prefix, *args],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )


def start_child(home: Path, adapter: Path, stop: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), str(adapter), stop],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=REPO,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )


def error_lines(stderr: str) -> list[str]:
    """What the CLI itself wrote (libraries draw loading bars on stderr too)."""
    return [line for line in stderr.splitlines() if line.startswith("agent-helper")]


# -- the second embedder ------------------------------------------------------------------------


def test_adapter_embedder_is_real_and_different(embedder, adapted, adapter):
    assert adapted.hash != embedder.hash and adapted.name.endswith(f"+{adapter.name}")
    assert adapted.escalate_below == ESCALATE_BELOW and embedder.escalate_below is None
    texts = ["Where is my parcel?", "How do I reset my password?"]
    base, tuned = embedder.embed(texts), adapted.embed(texts)
    assert np.allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    assert (base * tuned).sum(axis=1).max() < 0.99


# -- the swap -----------------------------------------------------------------------------------


def test_reindex_swaps_to_the_new_embedder(tmp_path, embedder, adapted):
    home = build_home(tmp_path, embedder)
    before = KnowledgeStore(home, embedder)
    documents, chunks, answers = before.documents(), all_chunks(before), top_answers(before)
    generation = before.generation
    before.close()

    store = KnowledgeStore(home, adapted, check_embedder=False)
    with pytest.raises(StoreError, match="reindex"):
        store.dense_search(adapted.embed(["x"])[0], 3)  # never searches old vectors with the new model
    seen: list[tuple[int, int]] = []
    result = reindex(store, batch_size=8, progress=lambda done, total: seen.append((done, total)))
    assert result.status == REINDEXED and result.chunks == len(chunks)
    assert (result.old.hash, result.new.hash) == (embedder.hash, adapted.hash)
    assert f"re-embedded {len(chunks)} chunks" in result.message() and adapted.name in result.message()
    assert seen[-1] == (len(chunks), len(chunks)) and len(seen) == -(-len(chunks) // 8)
    store.close()

    after = KnowledgeStore(home, adapted)
    assert after.count() == len(chunks) and all_chunks(after) == chunks
    assert after.documents() == documents and after.generation > generation
    assert after.built_with.hash == adapted.hash
    assert top_answers(after) == answers
    stored = after.get([chunks[0][0]])[chunks[0][0]][1]
    assert np.allclose(stored, adapted.embed([chunks[0][1]])[0], atol=1e-5)  # really re-embedded
    assert len(collections(home)) == 1
    after.close()

    with pytest.raises(StoreError) as refused:
        KnowledgeStore(home, embedder)
    assert embedder.name in str(refused.value) and adapted.name in str(refused.value)
    assert "reindex" in str(refused.value)


def test_reindex_with_the_same_embedder_does_nothing_unless_forced(tmp_path, embedder):
    home = build_home(tmp_path, embedder)
    store = KnowledgeStore(home, embedder)
    name = store.collection.name
    same = reindex(store)
    assert same.status == UP_TO_DATE and same.chunks == 0 and "already built" in same.message()
    assert store.collection.name == name
    forced = reindex(store, force=True)
    assert forced.status == REINDEXED and forced.chunks == store.count()
    assert store.collection.name != name and collections(home) == [store.collection.name]
    store.close()


def test_empty_store_switches_embedder(tmp_path, embedder, adapted):
    KnowledgeStore(tmp_path / "home", embedder).close()
    store = KnowledgeStore(tmp_path / "home", adapted, check_embedder=False)
    result = reindex(store)
    assert result.status == EMPTY and "empty" in result.message()
    store.close()
    assert KnowledgeStore(tmp_path / "home", adapted).count() == 0


def built_home_answers(tmp_path, embedder):
    """A home built with `embedder`, its top answers and chunk count, with the store closed."""
    home = build_home(tmp_path, embedder)
    store = KnowledgeStore(home, embedder)
    answers, count = top_answers(store), store.count()
    store.close()
    return home, answers, count


# -- kills --------------------------------------------------------------------------------------


def test_kill_during_copy_keeps_the_old_store(tmp_path, embedder, adapter, adapted):
    home, answers, count = built_home_answers(tmp_path, embedder)

    child = start_child(home, adapter, "first-batch", tmp_path / "child.log")
    try:
        line = child.stdout.readline()
        assert line.startswith("written 5/"), (line, (tmp_path / "child.log").read_text()[-2000:])
        # While it runs: the old collection keeps serving; writes and a second re-index are refused.
        serving = KnowledgeStore(home, embedder)
        assert top_answers(serving) == answers
        late = tmp_path / "files" / "late.csv"
        late.write_text("question,answer\nIs this late?,Yes.\n", encoding="utf-8")
        with pytest.raises(StoreError, match="a re-index is running"):
            ingest_paths(serving, [late])
        with pytest.raises(StoreError, match="a re-index is running"):
            serving.delete_document(serving.documents()[0].id)
        with pytest.raises(StoreError, match="already running"):
            reindex(KnowledgeStore(home, adapted, check_embedder=False))
        serving.close()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert len(collections(home)) == 2  # the half-built one is left behind by the kill …

    reopened = KnowledgeStore(home, embedder)  # … and dropped on the next open
    assert len(collections(home)) == 1
    assert reopened.count() == count and top_answers(reopened) == answers
    reopened.close()

    done = cli(home, "reindex", embedder=adapter)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"re-embedded {count} chunks" in done.stdout and adapted.name in done.stdout
    assert len(collections(home)) == 1
    final = KnowledgeStore(home, adapted)
    assert final.count() == count and top_answers(final) == answers
    final.close()


def test_kill_after_the_swap_keeps_the_new_store(tmp_path, embedder, adapter, adapted):
    home, answers, count = built_home_answers(tmp_path, embedder)

    child = start_child(home, adapter, "before-drop", tmp_path / "child.log")
    child.wait(timeout=300)
    assert child.returncode == -signal.SIGKILL, (tmp_path / "child.log").read_text()[-2000:]
    assert len(collections(home)) == 2  # swapped, the old one not dropped yet

    with pytest.raises(StoreError, match="reindex"):
        KnowledgeStore(home, embedder)
    swapped = KnowledgeStore(home, adapted)
    assert len(collections(home)) == 1
    assert swapped.count() == count and top_answers(swapped) == answers
    swapped.close()


# -- refusals and the CLI -----------------------------------------------------------------------


def test_mismatched_embedder_is_refused(tmp_path, embedder, adapted, adapter):
    home = build_home(tmp_path, embedder)
    with pytest.raises(StoreError) as refused:
        KnowledgeStore(home, adapted)
    message = str(refused.value)
    assert embedder.name in message and adapted.name in message and "agent-helper reindex" in message

    run = cli(home, "search", "where is my parcel", embedder=adapter)
    assert run.returncode == 1 and run.stdout == ""
    assert "Traceback" not in run.stderr
    assert error_lines(run.stderr) == [f"agent-helper search: {message}"]


def test_cli_embedder_must_be_an_adapter_folder(tmp_path):
    not_adapter = tmp_path / "plain"
    not_adapter.mkdir()
    for value, reason in [(not_adapter, "not an embedder adapter folder"), (tmp_path / "nope", "no such folder")]:
        run = cli(tmp_path / "home", "docs", embedder=value)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        lines = error_lines(run.stderr)
        assert len(lines) == 1 and reason in lines[0] and str(value.name) in lines[0]


def test_embedder_choice_from_option_env_or_shipped(monkeypatch, adapter):
    from retriever.embedder import default_adapter_path
    from ui.settings import EMBEDDER_ENV, resolve_home

    monkeypatch.delenv(EMBEDDER_ENV, raising=False)
    assert resolve_home("h").embedder_adapter == default_adapter_path()
    assert resolve_home("h", "base").embedder_adapter is None
    monkeypatch.setenv(EMBEDDER_ENV, str(adapter))
    assert resolve_home("h").embedder_adapter == adapter
    assert resolve_home("h", "base").embedder_adapter is None  # the option wins


# -- the service --------------------------------------------------------------------------------


def test_service_uses_the_home_embedder_and_its_floor(tmp_path, embedder, adapter):
    """The service searches with the Home's embedder and gives the judge its escalate_below."""
    import shutil

    from retriever.embedder import shared_embedder
    from app.home import Home
    from app.service import AgentHelper
    from ui_support import model_config

    strict = tmp_path / "strict-adapter"  # same weights (same hash), a floor nothing reaches
    shutil.copytree(adapter, strict)
    (strict / "embedder.json").write_text(json.dumps({"escalate_below": 0.99}))
    strict_embedder = shared_embedder(None, str(strict))
    home = build_home(tmp_path, embedder)
    with pytest.raises(StoreError, match="reindex"):
        AgentHelper(Home(home, embedder_adapter=strict), model_config())
    assert reindex(KnowledgeStore(home, strict_embedder, check_embedder=False)).status == REINDEXED

    service = AgentHelper(Home(home, embedder_adapter=strict), model_config(), log_answers=False)
    assert service.store.embedder is strict_embedder
    assert service.status()["embedder"] == strict_embedder.name
    assert service.judge.config.escalate_below == 0.99
    far = service.ask("What time does the bakery on Main Street open on Sundays?")
    assert far.escalate and far.match is None and "calibrated floor" in far.reasoning

    result = service.reindex(force=True)
    assert result.status == REINDEXED and result.chunks == service.store.count()
    assert service.search("Where is my parcel?", k=1)[0].answer == TOPICS[1][3]
