"""`agent-helper`: the command line, the product's public face for scripts (see README).

Heavy libraries are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from app.home import Home, open_store
from ingest.formats import expected_types
from ui import train_command
from ui.progress_bars import progress_bars
from ui.settings import (
    BASE_EMBEDDER, CHROMA_URL_ENV, DTYPES, EMBEDDER_ENV, JUDGE_DTYPE_ENV, JUDGE_MODEL_ENV, JUDGE_URL_ENV, MALLOC_ENV,
    ServerSettings, SettingsError, apply_offline_env, missing_malloc_env, resolve_home, resolve_judge_dtype,
    resolve_judge_server,
)


def _retriever(home: Home):
    from retriever.hybrid import HybridRetriever

    return HybridRetriever(open_store(home))


def cmd_ingest(args) -> int:
    from ingest.pipeline import IngestOptions, ingest_paths

    options = IngestOptions(max_bytes=int(args.max_mb * 2**20))
    progress_for, close_bars = progress_bars()
    try:
        results = ingest_paths(open_store(args.home), args.paths, options, progress_for)
    finally:
        close_bars()
    for result in results:
        print(result.message(), file=sys.stdout if result.ok else sys.stderr)
    if not results:
        print(f"no {expected_types()} files found in the given paths", file=sys.stderr)
    return 0 if results and all(r.ok for r in results) else 1


def cmd_docs(args) -> int:
    from dataclasses import asdict

    store = open_store(args.home)
    documents = store.documents()
    if args.json:
        print(json.dumps([asdict(d) for d in documents], indent=2))
        return 0
    if not documents:
        print("no documents yet: agent-helper ingest FILE...")
    for d in documents:
        ocr = f" ocr_pages={d.ocr_pages}" if d.ocr_pages else ""
        print(f"{d.id}  {d.name}  pages={d.pages}{ocr} chunks={d.chunks} (faq={d.faq_pairs} "
              f"passages={d.passages} rows={d.rows})  sha256={d.sha256}")
    print(f"embedder: {store.built_with}")
    return 0


def cmd_reindex(args) -> int:
    from tqdm import tqdm

    from retriever.reindex import reindex

    # The old vectors are never read, so a store built with another embedder opens for this.
    store = open_store(args.home, check_embedder=False)
    bars: list[tqdm] = []  # made on the first batch: nothing to show when there is nothing to do

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="re-embedding", unit="chunk", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        result = reindex(store, force=args.force, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    print(result.message())
    return 0


def cmd_delete(args) -> int:
    store = open_store(args.home)
    try:
        doc = store.delete_document(args.doc_id)
    except KeyError:
        print(f"no document with id {args.doc_id} (see `agent-helper docs`)", file=sys.stderr)
        return 1
    print(f"deleted {doc.id} {doc.name} ({doc.chunks} chunks)")
    return 0


def cmd_search(args) -> int:
    from app.views import where

    candidates = _retriever(args.home).search(args.text, k=args.k)
    if args.json:
        print(json.dumps([c.to_dict() for c in candidates], indent=2))
        return 0
    if not candidates:
        print("nothing found (is the knowledge base empty? see `agent-helper docs`)")
    for rank, c in enumerate(candidates, start=1):
        cited = where(c.source, c.page, c.section)
        print(f"{rank}. [{c.score:.3f}] {c.question}\n   → {c.answer[:200]}\n   ({cited})")
    return 0


def _service(args, log_answers: bool = True):
    from app.service import AgentHelper

    return AgentHelper(args.home, _model_config(args), log_answers=log_answers)


def _model_config(args):
    from app.judges import default_model_config

    return default_model_config(args.home.models, base=args.model, adapter=args.adapter,
                                dtype=resolve_judge_dtype(args.dtype), server=_judge_server(args))


def _judge_server(args):
    return resolve_judge_server(getattr(args, "judge_url", None), getattr(args, "judge_model", None),
                                getattr(args, "judge_timeout", None))


def _print_answer(answer) -> None:
    from app.views import AnswerView

    view = AnswerView.of(answer)
    if view.escalate:
        print(f"\nNO MATCH — ESCALATE (confidence {view.confidence})")
    else:
        print(f"\nMATCH ({view.confidence}): {view.question}\n\n{view.resolution}\n\nsource: {view.source}")
    for note in view.notes:
        print(f"note: {note}")
    print("\ncandidates:")
    for c in view.candidates:
        print(f"  [{c.number}] {c.question} — similarity {c.similarity:.2f}, combined {c.combined:.2f} ({c.source}, id {c.id})")
    print(f"({view.latency_s:.2f}s, {view.model})")


def cmd_ask(args) -> int:
    from reasoner.backends import ModelLoadError

    try:
        service = _service(args)
        if args.json:
            print(json.dumps(service.ask(args.text).to_json_dict(), indent=2))
            return 0
        answer = None
        for item in service.ask_stream(args.text):
            if isinstance(item, str):
                print(item, end="", flush=True)
            else:
                answer = item
        _print_answer(answer)
        return 0
    except ValueError as error:
        print(f"agent-helper ask: {error}", file=sys.stderr)
        return 2
    except ModelLoadError as error:  # no model, or its inference server down: one line, no traceback
        print(f"agent-helper ask: {error}", file=sys.stderr)
        return 1


def _read_tickets(path: Path, limit: int | None) -> list[dict]:
    tickets = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path.name}: line {number} is not JSON ({error.msg})") from None
            if not isinstance(item, dict) or not isinstance(item.get("ticket"), str):
                raise ValueError(f'{path.name}: line {number} has no "ticket" string')
            tickets.append(item)
            if limit and len(tickets) >= limit:
                break
    return tickets


def cmd_eval(args) -> int:
    from tqdm import tqdm

    from reasoner.evaluate import evaluate, stage_table

    try:
        tickets = _read_tickets(Path(args.queries), args.limit)
    except (OSError, ValueError) as error:
        print(f"agent-helper eval: {error}", file=sys.stderr)
        return 2
    service = _service(args, log_answers=False)
    with tqdm(total=len(tickets), desc="eval", unit="ticket", file=sys.stderr) as bar:
        report = evaluate(tickets, service.retrieval_stages(), service.judge, lambda i, r: bar.update(1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            for record in report.records:
                handle.write(json.dumps(record.to_dict()) + "\n")
    result = report.to_json_dict()
    print(json.dumps(result, indent=2) if args.json else stage_table(report))
    return 0


def cmd_serve(args) -> int:
    from ui.server import serve

    try:
        serve(args.home, args.host, args.port, ServerSettings.from_env(), model_config=_model_config(args))
    except SettingsError as error:
        print(f"agent-helper serve: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_export_gguf(args) -> int:
    from app.judges import default_model_config
    from reasoner.backends import ModelLoadError, load_model
    from reasoner.gguf_export import export_gguf

    try:  # float32: the weights the in-process judge computes with on a CPU
        loaded = load_model(default_model_config(args.home.models, adapter=args.adapter, dtype="float32"))
        path = export_gguf(loaded, Path(args.out))
    except ModelLoadError as error:
        print(f"agent-helper export-gguf: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB): {loaded.info.describe()}, merged; serve it with "
          "llama.cpp's server (README: The judge on an inference server)")
    return 0


def cmd_feedback_export(args) -> int:
    from app.feedback import export_feedback

    count = export_feedback(args.home.feedback_db, args.file)
    print(f"wrote {count} feedback examples to {args.file}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-helper",
        description="Find the FAQ or past resolution that answers a support ticket, or escalate.",
    )
    parser.add_argument("--home", help="state folder (default: $AGENT_HELPER_HOME or ./.agent-helper)")
    parser.add_argument(
        "--embedder", metavar="PATH",
        help=f"search embedder: a LoRA adapter folder, or '{BASE_EMBEDDER}' for the plain packaged "
             f"all-MiniLM-L6-v2 (default: ${EMBEDDER_ENV}, else the shipped adapter when present, "
             "else base); the knowledge base must be built with it (see `reindex`)",
    )
    parser.add_argument(
        "--chroma-url", metavar="URL",
        help=f"keep the knowledge base on a running Chroma server (`chroma run`), e.g. "
             f"http://127.0.0.1:8000, shared by every agent-helper pointed at it (default: "
             f"${CHROMA_URL_ENV}, else embedded under --home)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _knowledge_commands(sub)
    _answer_commands(sub)
    p = sub.add_parser("feedback", help="agents' feedback")
    feedback = p.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")
    e = feedback.add_parser("export", help="write feedback as training examples (JSONL)")
    e.add_argument("file", metavar="FILE")
    e.set_defaults(func=cmd_feedback_export)
    train_command.add_parser(sub)
    return parser


def _knowledge_commands(sub) -> None:
    p = sub.add_parser("ingest", help=f"add knowledge files ({expected_types()}) or folders of them")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--max-mb", type=float, default=200, help="refuse files larger than this (MiB)")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("docs", help="list ingested documents")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_docs)
    p = sub.add_parser("delete", help="remove a document and all its chunks")
    p.add_argument("doc_id", metavar="DOC_ID")
    p.set_defaults(func=cmd_delete)
    p = sub.add_parser("reindex", help="re-embed every chunk with the chosen --embedder (the old "
                       "index keeps serving until the new one is complete)")
    p.add_argument("--force", action="store_true",
                   help="re-embed even when the store is already built with this embedder")
    p.set_defaults(func=cmd_reindex)
    p = sub.add_parser("search", help="show the retriever's candidate FAQs for a ticket")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("-k", type=int, default=5, help="number of candidates (default 5)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)


def _model_options(p) -> None:
    p.add_argument("--model", default="embedded",
                   help="judge base model: 'embedded' (SmolLM2-135M, default) or a HF name/path")
    p.add_argument("--adapter", type=Path, default=None,
                   help="LoRA adapter folder (default: the shipped one for the embedded model)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help=f"judge weights' dtype (default: ${JUDGE_DTYPE_ENV}, else auto: float32 on a "
                        "CPU for the embedded model, bfloat16 on CUDA)")
    p.add_argument("--judge-url", metavar="URL",
                   help=f"run the judge on this OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
                        f"(default: ${JUDGE_URL_ENV}; unset = in this process); --model and --adapter still "
                        "name its tokenizer and calibration")
    p.add_argument("--judge-model", metavar="NAME",
                   help=f"the name the server serves the judge under (default: ${JUDGE_MODEL_ENV}, else 'judge')")
    p.add_argument("--judge-timeout", type=float, metavar="SECONDS", help="longest wait for the server (default 120)")


def _answer_commands(sub) -> None:
    p = sub.add_parser("ask", help="judge a ticket: matched FAQ with reasoning, or escalate")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--json", action="store_true", help="print one JSON object (see README)")
    _model_options(p)
    p.set_defaults(func=cmd_ask)
    p = sub.add_parser("eval", help="accuracy, out-of-scope recall and latency on labelled tickets")
    p.add_argument("queries", metavar="QUERIES.jsonl",
                   help='lines {"ticket": str, "label": str|null}; null = should escalate')
    p.add_argument("--limit", type=int, help="only the first N tickets")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", metavar="FILE", help="also write one JSON line per ticket")
    _model_options(p)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("export-gguf", help="write the judge (embedded model + adapter, merged, float32) as a GGUF "
                       "file for llama.cpp's server")
    p.add_argument("out", metavar="FILE.gguf")
    p.add_argument("--adapter", type=Path, default=None, help="LoRA adapter folder (default: the shipped one)")
    p.set_defaults(func=cmd_export_gguf)
    p = sub.add_parser("serve", help="start the web page and the REST API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    _model_options(p)
    p.set_defaults(func=cmd_serve)


def _reexec_with_malloc_env() -> None:
    os.environ.update(MALLOC_ENV)
    os.execv(sys.executable, [sys.executable, "-m", "ui.cli", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    if argv is None and missing_malloc_env():
        _reexec_with_malloc_env()
    apply_offline_env()
    args, unknown = build_parser().parse_known_args(argv)
    if unknown and args.command != "train":  # only `train` has options generated from its config
        build_parser().parse_args(argv)
    args.rest = unknown
    try:
        args.home = resolve_home(args.home, args.embedder, args.chroma_url)
        resolve_judge_dtype(getattr(args, "dtype", None))
        _judge_server(args)
    except SettingsError as error:
        print(f"agent-helper: {error}", file=sys.stderr)
        return 2
    from retriever.store import StoreError

    try:
        return args.func(args)
    except StoreError as error:  # wrong embedder, a re-index running, server down: one line, no traceback
        print(f"agent-helper {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
