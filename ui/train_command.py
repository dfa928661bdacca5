"""`agent-helper train`: a recipe's config (training/recipes.py) and one option per config field.

The options are generated from the recipe's config dataclasses and documented by their fields'
docstrings, so the command line never restates a training option:

    agent-helper train --config training/configs/smollm2-135m-lora.toml --train.max_steps 50 --out runs/x
    agent-helper train --config training/configs/minilm-embedder.toml --help
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("train", add_help=False,
                       help="fine-tune the judge or the search embedder from a TOML config (see training/); "
                            "--config FILE --help lists its options")
    p.add_argument("--config", metavar="TOML", help="training/configs/NAME.toml (names its recipe)")
    p.add_argument("--out", metavar="DIR", help="run folder (default <home>/runs/<config>-<time>)")
    p.add_argument("--check", action="store_true", help="validate config, data and base model, then stop")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("-h", "--help", action="store_true")
    p.set_defaults(func=cmd_train, rest=[])


def cmd_train(args) -> int:
    from training.config import ConfigError
    from training.recipes import recipe_of

    try:
        recipe = recipe_of(Path(args.config)) if args.config else None
        if recipe is None or args.help:
            _train_parser(recipe).print_help()
            return 0 if args.help else 2
        options = _train_parser(recipe).parse_args(args.rest)
        overrides = [*args.set, *(f"{key}={_toml(value)}" for key, value in vars(options).items() if value is not None)]
        if args.out:
            overrides.append(f"output.dir={_toml(args.out)}")
        return recipe.run(recipe.load(Path(args.config), overrides), args.home.root, args.check)
    except ConfigError as error:
        print(f"agent-helper train: {error}", file=sys.stderr)
        return 2


def _toml(value: str) -> str:
    """An option's text as a TOML value: numbers, booleans and lists as written, anything else a string."""
    import tomllib

    try:
        tomllib.loads(f"v = {value}")
        return value
    except tomllib.TOMLDecodeError:
        return json.dumps(value)


def _train_parser(recipe) -> argparse.ArgumentParser:
    """One option per field of the recipe's config (`--train.max_steps 50`), documented by the field's
    own docstring (training/config.field_docs): the config dataclasses are the command line."""
    from training.config import field_docs

    parser = argparse.ArgumentParser(
        prog="agent-helper train", usage="agent-helper train --config TOML [--out DIR] [--check] [options]",
        add_help=False,
        description=f"Options of the {recipe.name!r} recipe ({recipe.what}); each overrides the config file's "
                    "value. Also: --out DIR, --check (validate and stop), --set SECTION.KEY=VALUE."
        if recipe else "agent-helper train --config training/configs/NAME.toml [--out DIR] [--check] [options]: "
                       "the config names its recipe; --config FILE --help lists the recipe's options.")
    for section, cls in (recipe.sections() if recipe else {}).items():
        group = parser.add_argument_group(f"[{section}]")
        docs = field_docs(cls)
        for name, kind in typing.get_type_hints(cls).items():
            group.add_argument(f"--{section}.{name}", dest=f"{section}.{name}", metavar=_metavar(kind),
                               help=docs.get(name, "").replace("%", "%%"))
    return parser


def _metavar(kind) -> str:
    return {bool: "true|false", int: "N", float: "X", str: "TEXT"}.get(kind, "[A, B]")
