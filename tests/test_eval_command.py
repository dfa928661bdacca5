"""`agent-helper eval` end to end: a real knowledge base, the real retriever and embedded judge, and the
per-stage report a user reads (what the retriever alone gets right, and what the judge adds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FAQ = """question,answer,label
"Where is my parcel?","Track it from your orders page.",track
"How do I reset my password?","Use the 'forgot password' link.",password
"Can I get a refund?","Refunds take 5 working days.",refund
"""
TICKETS = [
    {"ticket": "my parcel hasn't arrived, where is it?", "label": "track"},
    {"ticket": "I forgot my password and cannot log in", "label": "password"},
    {"ticket": "what is the capital of Australia", "label": None},
]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ui.cli", "--home", str(home), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def test_eval_reports_each_stage_beside_the_pipeline(tmp_path):
    home = tmp_path / "home"
    (tmp_path / "faq.csv").write_text(FAQ, encoding="utf-8")
    assert cli(home, "ingest", str(tmp_path / "faq.csv")).returncode == 0
    tickets = tmp_path / "tickets.jsonl"
    tickets.write_text("".join(json.dumps(t) + "\n" for t in TICKETS), encoding="utf-8")

    table = cli(home, "eval", str(tickets), "--out", str(tmp_path / "records.jsonl"))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["stage", "accuracy"]
    assert lines[1].startswith("retriever") and lines[2].startswith("+ judge")
    assert "3 tickets (2 in scope, 1 out of scope)" in lines[3]  # then a note where the judge is weighted out

    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [r["stages"]["retriever"] for r in records[:2]] == ["track", "password"]
    assert [r["expected"] for r in records] == [t["label"] for t in TICKETS]

    result = json.loads(cli(home, "eval", str(tickets), "--json").stdout)
    assert list(result["stages"]) == ["retriever", "+ judge"]
    assert result["stages"]["+ judge"]["accuracy"] == result["accuracy"]
    retriever = result["stages"]["retriever"]
    assert retriever["n"] == 3 and retriever["retrieval_recall_at_5"] == 1.0
    assert retriever["in_scope_accuracy"] == sum(r["stages"]["retriever"] == r["expected"] for r in records[:2]) / 2
