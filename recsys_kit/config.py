"""One frozen dataclass tree per run: defaults -> TOML file -> `--set key=value` overrides.

The resolved config is written as JSON into every run directory and read back unchanged,
so a run (or a tuned trial) can always be repeated from its own directory.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from recsys_kit.errors import DataError, read_text_file

# name -> that model's Config dataclass. recsys_kit.models fills it when it is imported (see
# `register_model_configs`): the models import TrainConfig from here, so this module never
# imports them (it did, and that was the one import circle in the code).
MODEL_CONFIGS: dict[str, type] = {}


def register_model_configs(configs: dict[str, type]) -> None:
    MODEL_CONFIGS.update(configs)


# ----------------------------------------------------------------------------- range checks
# Every config dataclass checks its own ranges in __post_init__ with these, so a TOML file, a
# --set override, a search-space sample and a config.json read back all pass one set of checks.

def check_at_least(section: str, key: str, value, low) -> None:
    if not value >= low:  # `not >=` so that NaN fails too
        raise DataError(f"[{section}] {key} must be >= {low}, got {value}")


def check_positive(section: str, key: str, value) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise DataError(f"[{section}] {key} must be a finite number > 0, got {value}")


def check_fraction(section: str, key: str, value) -> None:
    if not 0 <= value < 1:
        raise DataError(f"[{section}] {key} must be in [0, 1), got {value}")


def check_widths(section: str, key: str, widths) -> None:
    if not widths or min(widths) < 1:
        raise DataError(f"[{section}] {key} must list layer widths >= 1, got {list(widths)}")


@dataclass(frozen=True)
class HoldoutConfig:
    n_last: int = 1  # the time tail the contest hides
    n_random: int = 9  # plus random earlier items
    min_input: int = 2  # a user never keeps fewer input items than this
    # Short public rows (median under twice n_last + n_random): hide at most half the median scored
    # user's rows, the time tail first, so inputs stay as long as the submission's (protocol.holdout).
    adapt_short: bool = True

    def __post_init__(self):
        check_at_least("holdout", "n_last", self.n_last, 0)
        check_at_least("holdout", "n_random", self.n_random, 0)
        check_at_least("holdout", "min_input", self.min_input, 1)
        if self.n_last + self.n_random < 1:
            raise DataError(f"[holdout] n_last + n_random must be >= 1 (a holdout that hides nothing scores "
                            f"nothing), got {self.n_last} + {self.n_random}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 500
    # Small data sets would get one or two updates per epoch at 500 users a batch; the batch
    # shrinks so that every epoch makes at least this many optimiser steps.
    min_steps_per_epoch: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 8  # epochs without a better valid Recall@10 before stopping
    valid_fraction: float = 0.1  # of each fold's training users, held for early stopping
    eval_every: int = 1
    # Seed of model fitting (initial weights, dropout masks, batch order); -1 derives it from the
    # base seed. Tuning trials fit with their own, and best.toml records it so `kit cv` reproduces
    # the trial; holdout, folds and validation users always come from the base seed.
    fit_seed: int = -1
    # auto = measured on first use per machine and network (models/precision.py: bf16 only when clearly faster;
    # cached; fp32 with the cache off or for fits too small to pay for the probe); fp16 adds a GradScaler.
    precision: str = "auto"

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise DataError(f"[train] precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        for key in ("epochs", "batch_size", "patience", "eval_every"):
            check_at_least("train", key, getattr(self, key), 1)
        check_at_least("train", "min_steps_per_epoch", self.min_steps_per_epoch, 0)
        check_positive("train", "lr", self.lr)
        check_at_least("train", "weight_decay", self.weight_decay, 0)
        if not math.isfinite(self.weight_decay):
            raise DataError(f"[train] weight_decay must be finite, got {self.weight_decay}")
        check_fraction("train", "valid_fraction", self.valid_fraction)
        check_at_least("train", "fit_seed", self.fit_seed, -1)


@dataclass(frozen=True)
class RunConfig:
    model: Any  # the model's own frozen config dataclass (see models.REGISTRY)
    train: TrainConfig = field(default_factory=TrainConfig)
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)
    seed: int = 0

    def __post_init__(self):
        if not dataclasses.is_dataclass(self.model) or not isinstance(getattr(self.model, "name", None), str):
            raise DataError(f"[model] must be a model config dataclass with a name, got {self.model!r}")
        if not self.seed >= 0:
            raise DataError(f"seed must be >= 0, got {self.seed}")

    @property
    def model_name(self) -> str:
        return self.model.name

    def to_dict(self) -> dict:
        return {
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
            "holdout": dataclasses.asdict(self.holdout),
            "seed": self.seed,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_toml(self) -> str:
        lines = [f"seed = {_toml_value(self.seed)}"]
        for section, values in self.to_dict().items():
            if isinstance(values, dict):
                lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _build(cls, values: dict, source: str, section: str):
    if not isinstance(values, dict):
        raise DataError(f"{source}: [{section}] must be a table of key = value lines, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DataError(f"{source} [{section}]: unknown key(s) {unknown} for [{cls.__name__}]; "
                        f"known keys: {sorted(known)}")
    converted = {}
    for name, value in values.items():
        default = getattr(cls(), name) if _has_defaults(cls) else None
        converted[name] = _coerce(value, default, f"{source} [{section}]: {name}")
    try:
        return cls(**converted)
    except DataError as err:  # the range checks name [section] key; add the file it came from
        raise DataError(f"{source}: {err}") from None


def _has_defaults(cls) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in fields(cls))


def _coerce(value, default, where: str):
    """Match the default's type so '0.5' from the command line and 0.5 from TOML agree."""
    if default is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
            inner = default[0] if default else None
            return tuple(_coerce(v, inner, where) for v in value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return str(value)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise DataError(f"{where}: cannot read {value!r} as {type(default).__name__}; "
                        f"fix the value") from None
    return value


def from_dict(raw: dict, source: str = "config") -> RunConfig:
    """A checked RunConfig; the model's Config class comes from MODEL_CONFIGS by `model.name`."""
    raw = dict(raw)
    model_raw = raw.pop("model", {"name": "multidae"})
    if not isinstance(model_raw, dict):
        raise DataError(f"{source}: [model] must be a table of key = value lines, got {model_raw!r}")
    model_raw = dict(model_raw)
    name = model_raw.get("name", "multidae")
    if not MODEL_CONFIGS:
        raise DataError(f"{source}: no models registered; import recsys_kit.models before loading a config")
    if name not in MODEL_CONFIGS:
        raise DataError(f"{source}: unknown model {name!r}; choose one of {sorted(MODEL_CONFIGS)}")
    model_cfg = _build(MODEL_CONFIGS[name], model_raw, source, "model")
    train = _build(TrainConfig, raw.pop("train", {}), source, "train")
    holdout = _build(HoldoutConfig, raw.pop("holdout", {}), source, "holdout")
    seed = _coerce(raw.pop("seed", 0), 0, f"{source}: seed")
    if raw:
        raise DataError(f"{source}: unknown section(s) {sorted(raw)}; "
                        f"use [model], [train], [holdout] and seed")
    try:
        return RunConfig(model=model_cfg, train=train, holdout=holdout, seed=seed)
    except DataError as err:
        raise DataError(f"{source}: {err}") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`train.epochs=5`, `model.dropout=0.3`, `seed=7` -> nested dict update (strings are coerced later)."""
    raw = json.loads(json.dumps(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=5")
        *sections, leaf = key.strip().split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise DataError(f"--set {item!r}: {section} is a value, not a section; "
                                f"use section.key=value, e.g. train.epochs=5")
        node[leaf] = value.strip()
    return raw


def _raw_config(path: Path | None, overrides: list[str] | None, seed: int | None) -> tuple[dict, str]:
    """The config file's tables with `--set` overrides and the seed applied, and where they came from."""
    raw: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        text = read_text_file(path, "pass an existing TOML file, e.g. configs/multidae.toml")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise DataError(f"{path}: not valid TOML ({err}); fix the file") from None
        source = str(path)
    if overrides:
        source += " with --set"  # the bad value may come from either
    raw = apply_overrides(raw, overrides or [])
    if seed is not None:
        raw["seed"] = seed
    return raw, source


def load_config(path: Path | None, overrides: list[str] | None = None, seed: int | None = None) -> RunConfig:
    return from_dict(*_raw_config(path, overrides, seed))


def holdout_and_seed(path: Path | None, overrides: list[str], seed: int | None = None) -> tuple[HoldoutConfig, int]:
    """The [holdout] section and seed alone, read without the model registry (which imports torch)."""
    raw, source = _raw_config(path, overrides, seed)
    return _build(HoldoutConfig, raw.get("holdout", {}), source, "holdout"), _coerce(raw.get("seed", 0), 0, "seed")


def config_from_json(text: str, source: str = "config.json") -> RunConfig:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{source}: not valid JSON ({err}); the run directory is damaged") from None
    if not isinstance(raw, dict):
        raise DataError(f"{source}: not a config object; the run directory is damaged")
    return from_dict(raw, source)
