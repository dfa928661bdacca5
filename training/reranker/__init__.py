"""The reranker recipe (`recipe = "reranker"`): a MiniLM cross-encoder that reorders the
retriever's candidates, trained as a LoRA adapter + head (see trainer.py)."""
