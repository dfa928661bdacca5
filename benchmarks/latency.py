"""How fast agents get answers, with the shipped models: one at a time, and many at once over REST.

    python benchmarks/latency.py                                     # data/samples, data/eval_tickets.jsonl
    python benchmarks/latency.py --knowledge .bench/banking77_knowledge.csv --tickets .bench/banking77_val.jsonl

1. In process (`AgentHelper.ask`, warmed up as the server warms up): latency p50/p95 over -n held-out
   tickets, by the path that decided (retriever or judge), and for the judged ones the judge's prefill
   and decode time and decode tokens/s.
2. A real `agent-helper serve` in a subprocess: --concurrent simultaneous `POST /api/v1/match` (20 and 50
   by default), latency p50/p95 and errors for each, and the server's peak RSS (VmHWM) with the judge loaded.

Prints one JSON object per stage. Set MALLOC_*/OMP_WAIT_POLICY as the Makefile does (the CLI sets them
for the server itself).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float | None:
    from reasoner.evaluate import percentile as interpolated

    value = interpolated(values, q)
    return None if value is None else round(value, 3)


def read_tickets(path: Path, n: int) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(rows) // n)
    picked = [r["ticket"] for r in rows[::step]][:n]
    return [picked[i % len(picked)] for i in range(n)]


class DecodeTimer:
    """Wraps the judge's forward pass to split prefill time from per-token decode time."""

    def __init__(self, decoder):
        self.inner, self.prefill_s, self.decode_s, self.decode_tokens = decoder._forward, 0.0, 0.0, 0
        decoder._forward = self

    def __call__(self, input_ids, *args):
        started = time.perf_counter()
        out = self.inner(input_ids, *args)
        elapsed = time.perf_counter() - started
        if input_ids.shape[1] == 1:
            self.decode_s, self.decode_tokens = self.decode_s + elapsed, self.decode_tokens + int(input_ids.shape[0])
        else:
            self.prefill_s += elapsed
        return out


def in_process(home: Path, knowledge: list[Path], tickets: list[str]) -> dict:
    from app.home import Home
    from app.service import AgentHelper

    service = AgentHelper(Home(home), log_answers=False)
    if not service.documents():
        service.ingest(knowledge)
    started = time.perf_counter()
    service.warm_up()
    warm_s = time.perf_counter() - started
    timer = DecodeTimer(service.judge.decoder)
    by_path: dict[str, list[float]] = {}
    for ticket in tickets:
        started = time.perf_counter()
        answer = service.ask(ticket)
        by_path.setdefault(answer.decided_by, []).append(time.perf_counter() - started)
    everything = [x for values in by_path.values() for x in values]
    judged = len(by_path.get("judge", []))
    return {
        "stage": "ask, one at a time", "tickets": len(tickets), "warm_up_s": round(warm_s, 2),
        "model": service.status_line(), "latency_p50_s": percentile(everything, 50),
        "latency_p95_s": percentile(everything, 95),
        "by_path": {path: {"n": len(v), "p50_s": percentile(v, 50), "p95_s": percentile(v, 95)}
                    for path, v in sorted(by_path.items())},
        "judge_prefill_s_per_ticket": round(timer.prefill_s / judged, 3) if judged else None,
        "judge_decode_s_per_ticket": round(timer.decode_s / judged, 3) if judged else None,
        "judge_decode_tokens_per_s": round(timer.decode_tokens / timer.decode_s, 1) if timer.decode_s else None,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "ui.cli", "--home", str(home), "serve", "--port", str(port)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{url}/health", timeout=2).json()
            if health.get("model_loaded") and health.get("warming_up") is False:
                return process, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    process.kill()
    raise RuntimeError("the server did not become ready within 300 s")


def simultaneous(url: str, tickets: list[str]) -> dict:
    import httpx

    results: list[tuple[float, int | str]] = [(0.0, "")] * len(tickets)
    start = threading.Barrier(len(tickets))

    def ask(i: int) -> None:
        start.wait()
        began = time.perf_counter()
        try:
            code = httpx.post(f"{url}/match", json={"ticket": tickets[i]}, timeout=300).status_code
        except httpx.HTTPError as error:
            code = type(error).__name__
        results[i] = (time.perf_counter() - began, code)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(tickets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = [seconds for seconds, code in results if code == 200]
    return {"stage": f"{len(tickets)} simultaneous POST /api/v1/match", "ok": len(latencies),
            "errors": len(tickets) - len(latencies), "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95)}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--knowledge", type=Path, nargs="+", default=[REPO / "data" / "samples"])
    parser.add_argument("--tickets", type=Path, default=REPO / "data" / "eval_tickets.jsonl")
    parser.add_argument("-n", type=int, default=100, help="tickets asked one at a time")
    parser.add_argument("--concurrent", type=int, nargs="*", default=[20, 50])
    parser.add_argument("--home", type=Path, help="reuse a home (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    home = args.home or Path(tempfile.mkdtemp(prefix="latency-")) / "home"
    print(json.dumps(in_process(home, args.knowledge, read_tickets(args.tickets, args.n))), flush=True)
    if not args.concurrent:
        return
    process, url = start_server(home)
    try:
        for count in args.concurrent:
            print(json.dumps(simultaneous(url, read_tickets(args.tickets, count))), flush=True)
        print(json.dumps({"stage": "serve", "peak_rss_mb": peak_rss_mb(process.pid)}), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
