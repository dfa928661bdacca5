"""`agent-helper`: the command line, the product's public face for scripts (see README).

Heavy libraries are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ui.home import MALLOC_ENV, Home, apply_offline_env, missing_malloc_env, resolve_home


def _store(home: Home):
    from retriever.embedder import shared_embedder
    from retriever.store import KnowledgeStore

    return KnowledgeStore(home.root, shared_embedder())


def _retriever(home: Home):
    from retriever.hybrid import HybridRetriever

    return HybridRetriever(_store(home))


def _progress_bars():
    """A tqdm bar per file and stage; returns the `progress_for(path)` the pipeline wants."""
    from tqdm import tqdm

    def progress_for(path: Path):
        bars: dict[str, tqdm] = {}

        def update(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, desc=f"{stage} {path.name}", unit="chunk"
                                         if stage == "embedding" else "page", leave=False)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update

    return progress_for


def cmd_ingest(args) -> int:
    from ingest.pipeline import IngestOptions, ingest_paths

    options = IngestOptions(max_bytes=int(args.max_mb * 2**20))
    results = ingest_paths(_store(args.home), args.paths, options, _progress_bars())
    for result in results:
        print(result.message(), file=sys.stdout if result.ok else sys.stderr)
    if not results:
        print("no .pdf, .csv or .jsonl files found in the given paths", file=sys.stderr)
    return 0 if results and all(r.ok for r in results) else 1


def cmd_docs(args) -> int:
    from dataclasses import asdict

    documents = _store(args.home).documents()
    if args.json:
        print(json.dumps([asdict(d) for d in documents], indent=2))
        return 0
    if not documents:
        print("no documents yet: agent-helper ingest FILE...")
    for d in documents:
        print(f"{d.id}  {d.name}  pages={d.pages} chunks={d.chunks} (faq={d.faq_pairs} "
              f"passages={d.passages} rows={d.rows})  sha256={d.sha256}")
    return 0


def cmd_delete(args) -> int:
    store = _store(args.home)
    try:
        doc = store.delete_document(args.doc_id)
    except KeyError:
        print(f"no document with id {args.doc_id} (see `agent-helper docs`)", file=sys.stderr)
        return 1
    print(f"deleted {doc.id} {doc.name} ({doc.chunks} chunks)")
    return 0


def cmd_search(args) -> int:
    candidates = _retriever(args.home).search(args.text, k=args.k)
    if args.json:
        print(json.dumps([c.to_dict() for c in candidates], indent=2))
        return 0
    if not candidates:
        print("nothing found (is the knowledge base empty? see `agent-helper docs`)")
    for rank, c in enumerate(candidates, start=1):
        where = f"{c.source}" + (f" p.{c.page}" if c.page else "")
        print(f"{rank}. [{c.score:.3f}] {c.question}\n   → {c.answer[:200]}\n   ({where})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-helper",
        description="Find the FAQ or past resolution that answers a support ticket, or escalate.",
    )
    parser.add_argument("--home", help="state folder (default: $AGENT_HELPER_HOME or ./.agent-helper)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="add PDF / CSV / JSONL knowledge files (or folders of them)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--max-mb", type=float, default=200, help="refuse files larger than this (MiB)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("docs", help="list ingested documents")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("delete", help="remove a document and all its chunks")
    p.add_argument("doc_id", metavar="DOC_ID")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("search", help="show the retriever's candidate FAQs for a ticket")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("-k", type=int, default=5, help="number of candidates (default 5)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)
    return parser


def _reexec_with_malloc_env() -> None:
    os.environ.update(MALLOC_ENV)
    os.execv(sys.executable, [sys.executable, "-m", "ui.cli", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    if argv is None and missing_malloc_env():
        _reexec_with_malloc_env()
    apply_offline_env()
    args = build_parser().parse_args(argv)
    args.home = resolve_home(args.home)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
