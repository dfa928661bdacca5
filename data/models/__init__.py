"""The models agent-helper ships, installed as the package `agent_helper_models` (pyproject.toml maps
it to data/models/), so a wheel install finds them as a checkout does:

- judge-smollm2/: the judge's LoRA adapter for SmolLM2-135M-Instruct, with agent_helper.json;
- embedder-minilm/: the search embedder's LoRA adapter for all-MiniLM-L6-v2, with embedder.json;
- reranker-minilm/: the cross-encoder reranker's LoRA adapter and head for all-MiniLM-L6-v2, with reranker.json.

Other folders can be used instead: `--adapter` (judge) and `--embedder` (search embedder).
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
JUDGE_ADAPTER = FOLDER / "judge-smollm2"
EMBEDDER_ADAPTER = FOLDER / "embedder-minilm"
