"""Tickets/s of the judge on an inference server (reasoner/served.py) beside the in-process judge, with
1 and with 8 tickets at once.

    python benchmarks/judge_server.py                        # starts llama.cpp's server itself
    python benchmarks/judge_server.py --url http://gpu-box:8000/v1 --model judge   # a running server (vLLM)

1. Unless --url is given: export the judge as a GGUF (reasoner/gguf_export.py) into a temporary folder
   and start llama-cpp-python's server on a free local port (tests/judge_server_support.py).
2. Judge the same -n tickets (tests' judge_items: eval tickets with their 5 nearest sample FAQs), with
   routing off so the model decides every one, at concurrency 1 (one after another) and 8
   (`decide_many` in batches of 8: eight concurrent requests to the server; one left-padded batch of
   eight in process).
3. Print one JSON object: tickets/s per backend and concurrency, agreement with the in-process judge
   at concurrency 1 (decisions, reasoning text, largest judge-probability difference), the machine
   (CPU, cores, threads) and its load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # judge_server_support: the tests' server and tickets

CONCURRENCY = (1, 8)


def machine(threads: int) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def measure(judge, items, concurrency: int) -> tuple[dict, list]:
    started = time.perf_counter()
    verdicts = judge.decide_many(items, batch_size=concurrency)
    wall = time.perf_counter() - started
    return {"tickets": len(items), "seconds": round(wall, 1), "tickets_per_s": round(len(items) / wall, 3)}, verdicts


def decisions(verdicts) -> list:
    return [(v.match.id if v.match else None, v.escalate) for v in verdicts]


def agreement(verdicts, reference) -> dict:
    """How `verdicts` compare with the in-process judge's at concurrency 1."""
    return {"same_decisions": sum(a == b for a, b in zip(decisions(verdicts), decisions(reference))),
            "same_reasoning_text": sum(a.raw_output == b.raw_output for a, b in zip(verdicts, reference)),
            "max_abs_dp_judge": max(abs(c.judge_probability - d.judge_probability)
                                    for a, b in zip(verdicts, reference) for c, d in zip(a.candidates, b.candidates))}


def run(args, server_url: str, model_name: str) -> dict:
    from reasoner.backends import ModelConfig, default_adapter_path, load_model
    from reasoner.judge import Judge, JudgeConfig
    from reasoner.server_config import JudgeServer
    from retriever.embedder import shared_embedder

    from judge_server_support import judge_items

    items = judge_items(shared_embedder(), args.n)
    local = load_model(ModelConfig(adapter=default_adapter_path(), dtype="float32", cache_dir=args.cache))
    remote = load_model(ModelConfig(adapter=default_adapter_path(), server=JudgeServer(server_url, model_name)))
    config = JudgeConfig.from_metadata(local.adapter_metadata, route=False)
    report: dict = {"server": remote.info.describe(), "in_process": local.info.describe()}
    reference = None
    for name, loaded in (("in_process", local), ("server", remote)):
        judge = Judge(loaded, config)
        judge.decide(*items[0])  # warm-up: first-call costs are not throughput
        for concurrency in CONCURRENCY:
            figures, verdicts = measure(judge, items, concurrency)
            reference = reference or verdicts
            figures["vs_in_process"] = agreement(verdicts, reference)
            report[f"{name}_c{concurrency}"] = figures
            print(json.dumps({name: concurrency, **figures}), file=sys.stderr)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=16, help="tickets (default 16)")
    parser.add_argument("--url", help="a running server's API (…/v1); default: start llama.cpp's server here")
    parser.add_argument("--model", default="judge", help="the name it serves the judge under")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and for llama.cpp (default 1)")
    parser.add_argument("--cache", type=Path, default=REPO / ".bench" / "models",
                        help="the in-process model cache (and the exported GGUF)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    before = machine(args.threads)
    if args.url:
        report = run(args, args.url, args.model)
    else:
        report = run_with_llama_server(args)
    print(json.dumps({"machine": before, "load_average_after": machine(args.threads)["load_average"], **report},
                     indent=2))


def run_with_llama_server(args) -> dict:
    from judge_server_support import LlamaServer
    from reasoner.backends import ModelConfig, default_adapter_path, load_model
    from reasoner.gguf_export import export_gguf

    gguf = args.cache / "judge-merged-f32.gguf"
    if not gguf.is_file():
        export_gguf(load_model(ModelConfig(adapter=default_adapter_path(), dtype="float32", cache_dir=args.cache)), gguf)
    with tempfile.TemporaryDirectory() as folder:
        with LlamaServer(gguf, log=Path(folder) / "server.log", threads=args.threads).start() as server:
            return {"llama_cpp_command": " ".join(server.command()[1:]), **run(args, server.url, server.alias)}


if __name__ == "__main__":
    main()
