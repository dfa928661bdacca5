"""Training, cut by recipe: what is shared here, each recipe in its folder.

Shared: config.py (TOML -> dataclasses, `--set` overrides, paths), recipes.py (the recipes by name),
runs.py (the run folder, metrics.jsonl, TrainingArguments both trainers share), tracking.py (MLflow /
Neptune), plots.py (loss curves), datasets.py (readers of the labelled datasets and JSONL files) and
splits.py (the one seeded held-out split, also used by the benchmarks' eval sets).

Recipes: judge/ (the judge's LoRA adapter; its data builder in judge/data/) and embedder/ (the
search embedder's LoRA adapter). Run one with `agent-helper train --config training/configs/NAME.toml`.
"""
