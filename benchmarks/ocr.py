"""Scanned-PDF ingest speed, memory and quality: a generated N-page FAQ scan through the whole pipeline.

    python benchmarks/ocr.py [--pages 100] [--scan-dpi 300]

Makes an A4 10 pt FAQ PDF (data/pdf_fixtures.make_faq_pdf), scans it (data/scan_fixtures.scan_pdf: rendered,
skewed, noisy, JPEG, image-only) and ingests the scan in a process of its own, so that the peak RSS is the
ingest's: OCR of every page at 200 dpi, table search on every scanned page, embedding, store. Prints pages/s
(wall and per CPU second: one file uses one core, the machine's other core can take another file), peak RSS,
and how many of the PDF's Q/A pairs came back from the scan (same question up to typography, answer at
least 95% alike, same page). Model loading is excluded from the time, not from the RSS.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "data"))  # pdf_fixtures, scan_fixtures: data/ is not a package

_TYPOGRAPHY = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-"})


def _norm(text: str) -> str:
    return " ".join(text.translate(_TYPOGRAPHY).split())


def make_scan(work: Path, pages: int, dpi: int) -> tuple[Path, list[dict]]:
    from pdf_fixtures import make_faq_pdf
    from scan_fixtures import scan_pdf

    truth = make_faq_pdf(work / "faq.pdf", pages, seed=3)
    scan_pdf(work / "faq.pdf", work / "scan.pdf", dpi=dpi, seed=3)
    return work / "scan.pdf", truth


def run_one(scan: Path, truth_file: Path) -> dict:
    from ingest.pipeline import ingest_file
    from retriever.embedder import shared_embedder
    from retriever.store import KnowledgeStore

    truth = json.loads(truth_file.read_text())
    store = KnowledgeStore(Path(tempfile.mkdtemp(prefix="bench-ocr-home-")), shared_embedder())
    stages: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(stage: str, done: int, total: int) -> None:  # wall seconds spent per stage
        now = time.perf_counter()
        stages[stage] = stages.get(stage, 0.0) + now - last[0]
        last[0] = now

    cpu, start = time.process_time(), time.perf_counter()
    result = ingest_file(store, scan, progress=progress)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if not result.ok:
        raise SystemExit(result.error)
    doc = result.document
    return {"pages": doc.pages, "ocr_pages": doc.ocr_pages, "pairs_truth": len(truth), "faq_pairs": doc.faq_pairs,
            "recovered": _recovered(store, truth), "seconds": seconds, "cpu_seconds": cpu,
            "stage_seconds": stages, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "file_mb": scan.stat().st_size / 2**20}


def _recovered(store, truth: list[dict]) -> int:
    found = {_norm(meta["question"]): meta for page in store.iter_chunks() for _, _, meta in page
             if meta["kind"] == "faq"}
    count = 0
    for item in truth:
        meta = found.get(_norm(item["question"]))
        if meta and meta.get("page") == item["page"] and difflib.SequenceMatcher(
                None, _norm(meta["answer"]), _norm(item["answer"])).ratio() >= 0.95:
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--scan-dpi", type=int, default=300, help="resolution of the generated scan")
    parser.add_argument("--one", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-ocr-"))
    scan, truth = make_scan(work, args.pages, args.scan_dpi)
    (work / "truth.json").write_text(json.dumps(truth))
    out = subprocess.run([sys.executable, __file__, "--one", str(scan), str(work / "truth.json")],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    r = json.loads(out)
    load = os.getloadavg()[0]
    print(f"scan: {r['pages']} pages, {r['file_mb']:.1f} MiB ({args.scan_dpi} dpi), OCR'd pages {r['ocr_pages']}")
    print(f"time: {r['seconds']:.0f} s wall, {r['cpu_seconds']:.0f} CPU s -> {r['pages'] / r['seconds']:.2f} "
          f"pages/s wall, {r['pages'] / r['cpu_seconds']:.2f} pages per CPU second (1-minute load {load:.1f})")
    print("stages (wall s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["stage_seconds"].items()))
    print(f"peak RSS: {r['peak_rss_mb']:.0f} MB")
    print(f"Q/A pairs recovered from the scan: {r['recovered']}/{r['pairs_truth']} "
          f"({100 * r['recovered'] / r['pairs_truth']:.1f}%), {r['faq_pairs']} pairs found")


if __name__ == "__main__":
    main()
