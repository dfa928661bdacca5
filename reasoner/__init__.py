"""The judge: a ticket and its candidates in, a verdict out. Knows nothing of Chroma or the web.

prompt.py (what the model sees, and the only parser of what it writes), backends.py (loading a model
+ LoRA adapter), metadata.py (the adapter's agent_helper.json), decoding.py (batched greedy decoding),
judge.py (the Judge), verdict.py (the Verdict and the one rule mixing judge and retriever),
evaluate.py (metrics on labelled tickets). The judge on an inference server: server_config.py (where),
completions.py (the /v1/completions client), served.py (decoding over it); gguf_export.py writes the
judge for llama.cpp.

Public faces (loaded on first use): `Judge`, `JudgeConfig`, `Verdict`, `ModelConfig`, `load_model`,
`AdapterMetadata`, `evaluate`.
"""

import importlib

_EXPORTS = {"Judge": "reasoner.judge", "JudgeConfig": "reasoner.judge", "Verdict": "reasoner.verdict",
            "ModelConfig": "reasoner.backends", "load_model": "reasoner.backends",
            "AdapterMetadata": "reasoner.metadata", "evaluate": "reasoner.evaluate"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
