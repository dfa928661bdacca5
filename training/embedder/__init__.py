"""Fine-tuning the retriever's embedding model (all-MiniLM-L6-v2) on labelled tickets with LoRA.

config.py (TOML -> dataclasses), data.py (labelled rows, split), pairs.py (triplets with hard
negatives), sampler.py (label-aware batches), evaluation.py (top-1, recall@5, escalate_below),
trainer.py (the recipe), command.py (check / train / report for a `recipe = "embedder"` config).
"""
