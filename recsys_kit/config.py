"""One frozen dataclass tree per run: defaults -> TOML file -> `--set key=value` overrides.

The resolved config is written as JSON into every run directory and read back unchanged,
so a run (or a tuned trial) can always be repeated from its own directory.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from recsys_kit.errors import DataError


@dataclass(frozen=True)
class HoldoutConfig:
    n_last: int = 1  # the time tail the contest hides
    n_random: int = 9  # plus random earlier items
    min_input: int = 2  # a user never keeps fewer input items than this


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


@dataclass(frozen=True)
class RunConfig:
    model: Any  # the model's own frozen config dataclass (see models.REGISTRY)
    train: TrainConfig = field(default_factory=TrainConfig)
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)
    seed: int = 0

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


def _build(cls, values: dict, source: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DataError(f"{source}: unknown key(s) {unknown} for [{cls.__name__}]; "
                        f"known keys: {sorted(known)}")
    converted = {}
    for name, value in values.items():
        default = getattr(cls(), name) if _has_defaults(cls) else None
        converted[name] = _coerce(value, default, f"{source}: {name}")
    return cls(**converted)


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
    from recsys_kit.models import REGISTRY

    raw = dict(raw)
    model_raw = dict(raw.pop("model", {"name": "multidae"}))
    name = model_raw.get("name", "multidae")
    if name not in REGISTRY:
        raise DataError(f"{source}: unknown model {name!r}; choose one of {sorted(REGISTRY)}")
    model_cfg = _build(REGISTRY[name].Config, model_raw, f"{source} [model]")
    train = _build(TrainConfig, raw.pop("train", {}), f"{source} [train]")
    holdout = _build(HoldoutConfig, raw.pop("holdout", {}), f"{source} [holdout]")
    seed = _coerce(raw.pop("seed", 0), 0, f"{source}: seed")
    if raw:
        raise DataError(f"{source}: unknown section(s) {sorted(raw)}; "
                        f"use [model], [train], [holdout] and seed")
    return RunConfig(model=model_cfg, train=train, holdout=holdout, seed=seed)


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
        node[leaf] = value.strip()
    return raw


def load_config(path: Path | None, overrides: list[str] | None = None, seed: int | None = None) -> RunConfig:
    raw: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: config file not found; pass an existing TOML, e.g. configs/multidae.toml")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise DataError(f"{path}: not valid TOML ({err}); fix the file") from None
        source = str(path)
    raw = apply_overrides(raw, overrides or [])
    if seed is not None:
        raw["seed"] = seed
    return from_dict(raw, source)


def config_from_json(text: str) -> RunConfig:
    return from_dict(json.loads(text), "config.json")
