"""Reading a training config: TOML -> typed dataclasses, validated before anything heavy happens.

Shared by every recipe (training/recipes.py): a config names its recipe (`recipe = "judge"` at the
top), and each recipe's dataclasses (training/judge/config.py, training/embedder/config.py) document
every field once. A key that is not a field, a value of the wrong type, a missing data file, a
malformed JSONL row or a base model that cannot be found is a `ConfigError` naming the key, file and
line, raised before any model loads.

Relative paths in a config file are resolved against the config file's folder, so a config works
from any working directory; relative paths given with `--set` are resolved against the current
directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

RECIPE_KEY = "recipe"
"""The top-level key naming a config's recipe (`recipe = "judge"`, see training/recipes.py)."""


class ConfigError(ValueError):
    """The configuration (or a file it names) cannot be used; the message says what to fix."""


@dataclass
class TrackingSection:
    backend: str = "mlflow"
    """"mlflow" (local store under <home>/mlruns), "neptune" (neptune-scale, self-hosted) or "none"."""
    experiment: str = "agent-helper-judge"
    """MLflow experiment / Neptune experiment name."""
    uri: str = ""
    """MLflow tracking URI; "" = sqlite:///<home>/mlruns/mlflow.db with artifacts beside it."""
    system_metrics: bool = True
    """Log CPU/GPU use and memory while training (MLflow system metrics)."""
    system_metrics_interval_s: float = 10.0
    """Seconds between system-metric samples."""
    neptune_project: str = ""
    """workspace/project for neptune-scale (its API token comes from its own environment variable)."""


@dataclass
class OutputSection:
    dir: str = ""
    """Run folder; "" = <home>/runs/<config name>-<UTC time>."""
    run_name: str = ""
    """Name shown in the tracker; "" = the run folder's name."""


@dataclass
class CheckpointedOutputSection(OutputSection):
    save_total_limit: int = 2
    """Checkpoints kept while training (the best one is always kept)."""
    keep_checkpoints: bool = False
    """Keep the checkpoints folder after the run (the adapter in the run folder is the best one)."""


def field_docs(cls) -> dict[str, str]:
    """Each field's docstring (the string right under it in the class body), by field name: the
    one place a config field is documented, shown by `agent-helper train --config FILE --help`."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):  # a subclass's docs win over its base's
        try:
            body = ast.parse(inspect.cleandoc("\n" + inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, IndexError):
            continue
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


class RunConfig:
    """What every recipe's config shares: a dataclass with a `name`, the `path` it was read from,
    and one field per TOML section."""

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["path"] = str(self.path) if self.path else None
        return out

    @classmethod
    def sections(cls) -> dict[str, type]:
        """Section name -> its dataclass."""
        return {name: hint for name, hint in typing.get_type_hints(cls).items() if name not in ("name", "path")}


def _type_ok(value, expected) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if typing.get_origin(expected) is list:
        (inner,) = typing.get_args(expected)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    raise TypeError(f"unsupported config type {expected!r}")


def _type_name(expected) -> str:
    if typing.get_origin(expected) is list:
        return f"a list of {_type_name(typing.get_args(expected)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}[expected]


def section_from_dict(cls, name: str, values, where: str):
    """One TOML table -> the dataclass `cls`; unknown keys and wrong types are ConfigErrors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
                          f"known: {', '.join(sorted(hints))}")
    for key, value in values.items():
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{where}: {name}.{key} must be {_type_name(hints[key])}, got {value!r}")
        value = float(value) if hints[key] is float else value
        values[key] = value
    return cls(**values)


def _resolve_path(value: str, base: Path) -> str:
    if not value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def resolve_path_fields(raw: dict, base: Path, fields) -> None:
    """Make the (section, key) path values in `raw` absolute, relative to `base`."""
    for section, key in fields:
        table = raw.get(section)
        if isinstance(table, dict) and key in table:
            value = table[key]
            if isinstance(value, str):
                table[key] = _resolve_path(value, base)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                table[key] = [_resolve_path(v, base) for v in value]


def parse_override(text: str) -> tuple[str, str, object]:
    """"train.max_steps=10" -> ("train", "max_steps", 10); the value is read as TOML, else a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE")
    key, value = text.split("=", 1)
    section, name = key.strip().split(".", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return section, name, parsed


def build_config(cls, raw: dict, name: str, where: str, path: Path | None, check) -> RunConfig:
    """Raw TOML tables -> `cls` (a RunConfig): every section typed, then `check(cfg, where)`."""
    sections = cls.sections()
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}; known: {', '.join(sections)}")
    cfg = cls(name=name, path=path,
              **{key: section_from_dict(sections[key], key, dict(value), where) for key, value in raw.items()})
    check(cfg, where)
    return cfg


def read_toml(path: Path) -> dict:
    """The raw TOML of a config file; ConfigError when it is missing or not TOML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None


def read_raw_config(path: Path, overrides: list[str], resolve_paths) -> dict:
    """TOML + `--set` overrides, with `resolve_paths(raw, base)` making paths absolute: the file's
    paths against its folder, the overrides' against the current directory."""
    path = Path(path)
    raw = read_toml(path)
    resolve_paths(raw, path.resolve().parent)
    for text in overrides:
        section, key, value = parse_override(text)
        layer = {section: {key: value}}
        resolve_paths(layer, Path.cwd())
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        raw[section][key] = layer[section][key]
    return raw


def read_config(cls, path: Path, overrides: list[str], resolve_paths, check) -> RunConfig:
    """A config file (+ `--set` overrides) read, its paths resolved, built into `cls` and checked."""
    path = Path(path)
    raw = read_raw_config(path, overrides, resolve_paths)
    raw.pop(RECIPE_KEY, None)  # which recipe reads the file (training/recipes.py), not a section
    return build_config(cls, raw, path.stem, str(path), path.resolve(), check)


