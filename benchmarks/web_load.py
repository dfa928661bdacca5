"""Many agents at once: N simultaneous chats on the page through gradio_client, one session per thread.

    python benchmarks/web_load.py                         # 20 chats, page started in-process on the samples
    python benchmarks/web_load.py --url http://127.0.0.1:7860/ --chats 20

Prints per-chat latency (until the verdict) and time until its reasoning starts streaming, p50/p95, errors and
throughput; `--json` prints one object. In-process it serves a temporary home with data/samples ingested
and the embedded model (no adapter unless --adapter), with the server's default queue settings.
Generation takes turns (one at a time on a CPU), so latency grows with the queue: p95 ≈ N × one answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def tickets(n: int) -> list[str]:
    lines = (REPO / "data" / "eval_tickets.jsonl").read_text(encoding="utf-8").splitlines()
    pool = [json.loads(line)["ticket"] for line in lines if line.strip()]
    return [pool[i % len(pool)] for i in range(n)]


def start_page(args):
    from ingest.pipeline import IngestOptions
    from reasoner.backends import ModelConfig
    from app.home import Home
    from ui.settings import ServerSettings
    from app.service import AgentHelper
    from ui.web import build_page, page_options

    home = Home(Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="web-load-")) / "home")
    cache = Path(tempfile.gettempdir()) / "agent-helper-test-models"
    service = AgentHelper(home, ModelConfig(adapter=Path(args.adapter) if args.adapter else None, cache_dir=cache),
                          ingest_options=IngestOptions())
    if not service.documents():
        started = time.perf_counter()
        results = service.ingest([REPO / "data" / "samples"])
        print(f"ingested {sum(r.ok for r in results)} sample files in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    started = time.perf_counter()
    service.warm_up()
    print(f"model ready in {time.perf_counter() - started:.0f} s: {service.status_line()}", file=sys.stderr)
    settings = ServerSettings(warm_up=False)
    page = build_page(service, settings)
    page.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **page_options(settings))
    return page, page.local_url


def _reasoning_shown(output) -> bool:
    """Whether a streamed page update already holds reasoning text (not just the placeholder)."""
    chat = output[0] if isinstance(output, (list, tuple)) and output else None
    if not isinstance(chat, list) or len(chat) < 2:
        return False
    content = chat[1].get("content") if isinstance(chat[1], dict) else None
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return bool(content) and content != "…"


def run(url: str, n: int) -> dict:
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(n)]
    texts = tickets(n)
    barrier = threading.Barrier(n)
    results: list[dict] = [{} for _ in range(n)]

    def chat(i: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            job = clients[i].submit(texts[i], [], api_name="/ask")
            first = None
            while not job.done():
                if first is None and any(_reasoning_shown(o) for o in job.outputs()[-2:]):
                    first = time.perf_counter() - started
                time.sleep(0.02)
            outputs = job.result()
            verdict = outputs[2]
            results[i] = {"ok": True, "latency_s": time.perf_counter() - started,
                          "first_reasoning_s": first if first is not None else time.perf_counter() - started,
                          "escalate": "escalate" in verdict, "updates": len(job.outputs())}
        except Exception as error:  # noqa: BLE001 - every failure is counted and shown
            results[i] = {"ok": False, "error": f"{type(error).__name__}: {error}",
                          "latency_s": time.perf_counter() - started}

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(n)]
    wall = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall
    done = [r for r in results if r.get("ok")]
    latencies = [r["latency_s"] for r in done]
    firsts = [r["first_reasoning_s"] for r in done]
    return {
        "chats": n,
        "completed": len(done),
        "errors": n - len(done),
        "error_messages": sorted({r["error"] for r in results if not r.get("ok")}),
        "escalated": sum(r["escalate"] for r in done),
        "latency_p50_s": round(percentile(latencies, 0.5), 2),
        "latency_p95_s": round(percentile(latencies, 0.95), 2),
        "latency_max_s": round(max(latencies, default=float("nan")), 2),
        "latency_mean_s": round(statistics.fmean(latencies), 2) if latencies else None,
        "first_reasoning_p50_s": round(percentile(firsts, 0.5), 2),
        "first_reasoning_p95_s": round(percentile(firsts, 0.95), 2),
        "wall_s": round(wall, 2),
        "answers_per_min": round(60 * len(done) / wall, 1) if wall else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running page (default: start one in-process)")
    parser.add_argument("--chats", type=int, default=20)
    parser.add_argument("--home", help="in-process: state folder (default: a temporary one)")
    parser.add_argument("--adapter", help="in-process: LoRA adapter folder for the embedded model")
    parser.add_argument("--torch-threads", type=int, help="in-process: torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    page = None
    url = args.url
    if url is None:
        if args.torch_threads:
            import torch

            torch.set_num_threads(args.torch_threads)
        page, url = start_page(args)
    try:
        report = run(url, args.chats)
    finally:
        if page is not None:
            page.close()
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['completed']}/{report['chats']} chats completed, {report['errors']} errors "
              f"({report['escalated']} escalated)")
        print(f"latency   p50 {report['latency_p50_s']:.1f} s   p95 {report['latency_p95_s']:.1f} s   "
              f"max {report['latency_max_s']:.1f} s")
        print(f"first reasoning text   p50 {report['first_reasoning_p50_s']:.1f} s   "
              f"p95 {report['first_reasoning_p95_s']:.1f} s")
        print(f"wall {report['wall_s']:.1f} s, {report['answers_per_min']} answers/min")
        for message in report["error_messages"]:
            print(f"error: {message}")
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
