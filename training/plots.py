"""The run's loss curve: training vs validation loss by step, best checkpoint marked."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def curves(records: list[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]
    valid = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r and "step" in r]
    return train, valid


def plot_loss_curve(metrics_file: Path, out: Path, best_step: int | None, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    train, valid = curves(read_metrics(metrics_file))
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        axis.plot(*zip(*train), label="training loss", color="tab:blue", linewidth=1.2)
    if valid:
        axis.plot(*zip(*valid), label="validation loss", color="tab:orange", marker="o", markersize=3)
    if best_step is not None:
        best = dict(valid).get(best_step)
        axis.axvline(best_step, color="tab:green", linestyle="--", linewidth=1, label=f"best step {best_step}")
        if best is not None:
            axis.scatter([best_step], [best], color="tab:green", zorder=5, s=40)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (completion tokens)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m training.plots RUN_DIR`: (re)draw RUN_DIR/loss_curve.png from its metrics.jsonl."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.plots")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    meta_file = args.run_dir / "agent_helper.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    out = plot_loss_curve(args.run_dir / "metrics.jsonl", args.run_dir / "loss_curve.png",
                          meta.get("best_step"), f"{args.run_dir.name}: loss")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
