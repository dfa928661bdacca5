"""The judge recipe: fine-tune a causal LM (SmolLM2 on CPU, Llama-3-8B QLoRA on a GPU) with LoRA to
reason about a ticket and its candidates, then calibrate how its vote mixes with the retriever's.

config.py (the sections of a `recipe = "judge"` TOML), data/ (building examples from the datasets),
rationale.py (reasoning targets), examples.py (loading and tokenizing examples), models.py (backend:
Unsloth or transformers + PEFT), trainer.py (the recipe), evaluation.py (metrics and calibration),
command.py (check / train / report), tiny.py (a tiny random Llama for smoke tests).
"""
