"""PDF ingest speed and memory: pages/s and peak RSS for generated 10 / 200 / 1,600-page FAQ PDFs.

    python benchmarks/ingest.py [--pages 10 200 1600]

Targets on 2 cores: >= 20 pages/s, <= 1 GB peak RSS for 1,600 pages. Each size runs in its own
process so its peak RSS is its own; model loading is excluded from the time (not from the RSS).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "data"))  # pdf_fixtures: data/ is not a package


def run_one(pages: int) -> dict:
    from pdf_fixtures import make_faq_pdf
    from ingest.pipeline import ingest_file
    from retriever.embedder import shared_embedder
    from retriever.store import KnowledgeStore

    work = Path(tempfile.mkdtemp(prefix=f"bench-ingest-{pages}-"))
    pdf = work / f"faq-{pages}.pdf"
    make_faq_pdf(pdf, pages, seed=pages)
    store = KnowledgeStore(work / "home", shared_embedder())
    start = time.perf_counter()
    result = ingest_file(store, pdf)
    seconds = time.perf_counter() - start
    doc = result.document
    return {"pages": doc.pages, "faq_pairs": doc.faq_pairs, "passages": doc.passages,
            "seconds": seconds, "pages_per_s": doc.pages / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "file_mb": pdf.stat().st_size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--pages", type=int, nargs="+", default=[10, 200, 1600])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    print(f"{'pages':>6} {'pairs':>6} {'file MB':>8} {'seconds':>8} {'pages/s':>8} {'peak RSS MB':>12}")
    for pages in args.pages:
        out = subprocess.run([sys.executable, __file__, "--one", str(pages)], capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{r['pages']:>6} {r['faq_pairs']:>6} {r['file_mb']:>8.2f} {r['seconds']:>8.1f} "
              f"{r['pages_per_s']:>8.1f} {r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
