"""The training recipes, by the name a config gives at its top (`recipe = "judge"`).

Each recipe is a config loader (its dataclasses document every field) and a command that checks,
trains and reports. Modules load on use, so naming the recipes costs nothing.

| recipe     | trains                                                        | configs                               |
| ---------- | ------------------------------------------------------------- | ------------------------------------- |
| `judge`    | the judge's LoRA adapter (SmolLM2 on CPU, Llama-3-8B QLoRA)    | smollm2-135m-lora, llama3-8b-qlora, tiny-test |
| `embedder` | the search embedder's LoRA adapter (all-MiniLM-L6-v2)          | minilm-embedder                       |
| `reranker` | the cross-encoder reranker's LoRA adapter + head (MiniLM)      | reranker-cpu, reranker-gpu            |
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from training.config import RECIPE_KEY, ConfigError, RunConfig, read_toml


def _resolve(reference: str):
    """"package.module:name" -> that object (imported now)."""
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Recipe:
    name: str
    what: str
    config_class: str
    """"module:Class" of the config dataclass."""
    loader: str
    """"module:function" reading a config file: (path, overrides) -> config."""
    command: str
    """"module:function" checking or training: (config, home, check) -> exit code."""

    def load(self, path: Path, overrides: list[str]) -> RunConfig:
        return _resolve(self.loader)(path, overrides)

    def run(self, cfg: RunConfig, home: Path, check: bool = False) -> int:
        return _resolve(self.command)(cfg, home, check)

    def sections(self) -> dict[str, type]:
        """The config's sections (name -> dataclass), for the command line's options."""
        return _resolve(self.config_class).sections()


RECIPES = {
    "judge": Recipe("judge", "the judge's LoRA adapter", "training.judge.config:TrainConfig",
                    "training.judge.config:load_config", "training.judge.command:run"),
    "embedder": Recipe("embedder", "the search embedder's LoRA adapter", "training.embedder.config:EmbedderConfig",
                       "training.embedder.config:load_embedder_config", "training.embedder.command:run"),
    "reranker": Recipe("reranker", "the cross-encoder reranker's LoRA adapter and head",
                       "training.reranker.config:RerankerConfig", "training.reranker.config:load_reranker_config",
                       "training.reranker.command:run"),
}


def recipe_of(path: Path) -> Recipe:
    """The recipe a config file names; ConfigError when it names none or an unknown one."""
    name = read_toml(path).get(RECIPE_KEY)
    if name not in RECIPES:
        raise ConfigError(f"{path}: {RECIPE_KEY} = {name!r}: a config names its recipe at the top, one of "
                          f"{', '.join(repr(r) for r in RECIPES)} (e.g. {RECIPE_KEY} = \"judge\")")
    return RECIPES[name]


def run(path: Path, home: Path, overrides: list[str] = (), check: bool = False) -> int:
    """Load the config with its recipe, then check (`check`) or train and report; ConfigError for
    anything wrong with the config or its inputs."""
    recipe = recipe_of(path)
    return recipe.run(recipe.load(path, list(overrides)), home, check)


__all__ = ["RECIPES", "Recipe", "recipe_of", "run"]
