"""Search spaces for `kit tune`: one TOML file per model, checked against the base config.

    model = "multidae"
    [params]
    "model.dropout" = { type = "float", low = 0.1, high = 0.8 }
    "model.hidden_dims[-1]" = { type = "int", low = 32, high = 400, log = true }
    "train.lr" = { type = "float", low = 1e-4, high = 1e-2, log = true }
    "model.hidden_dims[0]" = { type = "categorical", choices = [300, 600, 1000] }

Keys are dotted config paths; a list field is searched one element at a time with a
python-style index (`[0]` first encoder width, `[-1]` the latent bottleneck). Values are
applied to the base config's dict and rebuilt through `config.from_dict`, so they are
type-checked exactly like a config file.

A field the user set by hand (`kit tune --set train.epochs=3`) is pinned: its parameters leave
the space and every trial keeps the base config's value (a whole list field pins every element).
"""
from __future__ import annotations

import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from recsys_kit.config import RunConfig, from_dict
from recsys_kit.errors import DataError

if TYPE_CHECKING:  # optuna is imported by whoever runs a study, not by loading a search file
    import optuna

_KEY = re.compile(r"^(model|train|holdout)\.([A-Za-z_]\w*)(?:\[(-?\d+)\])?$")
_SPEC_KEYS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
              "categorical": {"choices"}}
CORNERS = 4096  # the most combinations of bounds and choices checked together at load
_EXAMPLE = ('"model.dropout" = { type = "float", low = 0.1, high = 0.8 }  or  '
            '"model.hidden_dims[-1]" = { type = "int", low = 32, high = 400, log = true }')


@dataclass(frozen=True)
class Param:
    key: str  # "model.hidden_dims[-1]": also the Optuna parameter name
    kind: str  # float | int | categorical
    section: str
    field: str
    index: int | None = None  # element of a tuple field (python-style, may be negative)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial):
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def probes(self) -> list:
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    params: tuple[Param, ...]
    pinned: tuple[str, ...] = ()  # parameters of the file left out: --set gave their field a value

    def apply(self, base: RunConfig, values: dict, source: str | None = None) -> RunConfig:
        """The base config with searched values set, validated by `from_dict` like any TOML."""
        raw = json.loads(base.to_json())  # a deep copy with tuples as lists
        for key, value in values.items():  # by key: a trial from an older space still applies
            section, name, index = _KEY.match(key).groups()
            if index is None:
                raw[section][name] = value
            else:
                raw[section][name][int(index)] = value
        return from_dict(raw, source or f"{self.path} {values}")

    def describe(self) -> dict:
        return {p.key: {"type": p.kind, "low": p.low, "high": p.high, "log": p.log, "step": p.step,
                        "choices": list(p.choices)} for p in self.params}


def default_search_path(config_path: Path | None, model_name: str) -> Path:
    """`<config dir>/search/<model>.toml`, else `configs/search/<model>.toml` under the cwd."""
    candidates = [Path(config_path).parent / "search" / f"{model_name}.toml"] if config_path else []
    candidates.append(Path("configs") / "search" / f"{model_name}.toml")
    for path in candidates:
        if path.exists():
            return path
    raise DataError(f"no search space for model {model_name!r}: looked for "
                    f"{', '.join(map(str, candidates))}; pass --search FILE")


def overridden_fields(overrides: Iterable[str]) -> set[tuple[str, str]]:
    """(section, field) of every `section.field=value` override (`--set`); other shapes set no field."""
    fields = set()
    for item in overrides:
        parts = item.partition("=")[0].strip().split(".")
        if len(parts) == 2:
            fields.add((parts[0], parts[1]))
    return fields


def pinned_values(space: SearchSpace, base: RunConfig) -> dict[str, Any]:
    """Each pinned parameter with the value every trial keeps (the base config's)."""
    raw = base.to_dict()
    values = {}
    for key in space.pinned:
        section, name, index = _KEY.match(key).groups()
        value = raw[section][name]
        values[key] = value if index is None else value[int(index)]
    return values


def load_search_space(path: Path, base: RunConfig, pinned: Iterable[str] = ()) -> SearchSpace:
    """Parse and check a search file against the base config; DataError names file, key and fix.

    `pinned`: the `--set` overrides already in `base`; a parameter on a field they set is left out of
    the space (recorded in `SearchSpace.pinned`) so the trials keep the value the user asked for."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: search space file not found; pass an existing TOML, "
                        f"e.g. configs/search/{base.model_name}.toml")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise DataError(f"{path}: not valid TOML ({err}); fix the file") from None
    unknown = sorted(set(raw) - {"model", "params"})
    if unknown:
        raise DataError(f"{path}: unknown top-level key(s) {unknown}; a search file has "
                        f"`model = \"name\"` and a [params] table")
    if raw.get("model", base.model_name) != base.model_name:
        raise DataError(f"{path}: searches model {raw['model']!r} but the config is "
                        f"{base.model_name!r}; pass --search configs/search/{base.model_name}.toml")
    table = raw.get("params")
    if not isinstance(table, dict) or not table:
        raise DataError(f"{path}: no [params] table; add one parameter per line, e.g. {_EXAMPLE}")
    base_raw = base.to_dict()
    fixed = overridden_fields(pinned)
    params, targets, left_out = [], {}, []
    for key, spec in table.items():
        param = _parse_param(path, key, spec, base_raw)
        length = len(base_raw[param.section][param.field]) if param.index is not None else 0
        target = (param.section, param.field, None if param.index is None else param.index % length)
        if target in targets:
            raise DataError(f"{path}: parameters {targets[target]!r} and {key!r} set the same value; "
                            f"remove one")
        targets[target] = key
        if (param.section, param.field) in fixed:
            left_out.append(key)
        else:
            params.append(param)
    if not params:
        raise DataError(f"{path}: every parameter ({', '.join(left_out)}) is pinned by --set, nothing is left "
                        f"to search; drop a --set, or run kit cv for this one config")
    space = SearchSpace(path, tuple(params), tuple(left_out))
    for param in params:  # every bound and choice must make a valid config, checked up front
        for value in param.probes():
            space.apply(base, {param.key: value}, f"{path}: parameter {param.key!r} = {value!r}")
    # ... and together: a config check may span fields (holdout.n_last + n_random >= 1). The checks
    # are ranges, so the corners of the space stand for all of it; past CORNERS, each alone must do.
    probes = [param.probes() for param in params]
    if math.prod(len(p) for p in probes) <= CORNERS:
        for corner in itertools.product(*probes):
            values = dict(zip((param.key for param in params), corner))
            space.apply(base, values, f"{path}: parameters {values} together")
    return space


def _parse_param(path: Path, key: str, spec: Any, base_raw: dict) -> Param:
    where = f"{path}: parameter {key!r}"
    match = _KEY.match(key)
    if not match:
        raise DataError(f"{where}: expected section.field or section.field[index] with section "
                        f"model, train or holdout, e.g. {_EXAMPLE}")
    section, name, index = match.group(1), match.group(2), match.group(3)
    fields = base_raw[section]
    if name not in fields or name == "name":
        known = sorted(k for k in fields if k != "name")
        raise DataError(f"{where}: [{section}] has no searchable field {name!r}; known: {known}")
    current = fields[name]
    if isinstance(current, tuple):
        if index is None:
            raise DataError(f"{where}: {section}.{name} is a list {list(current)}; search one element, "
                            f"e.g. \"{section}.{name}[0]\" or \"{section}.{name}[-1]\"")
        index = int(index)
        if not -len(current) <= index < len(current):
            raise DataError(f"{where}: index {index} is outside {section}.{name} = {list(current)} "
                            f"of the config; use 0..{len(current) - 1} or -1..-{len(current)}")
        current = current[index]
    elif index is not None:
        raise DataError(f"{where}: {section}.{name} is not a list; drop the [{index}]")
    if not isinstance(spec, dict):
        raise DataError(f"{where}: expected an inline table, e.g. {_EXAMPLE}")
    kind = spec.get("type")
    if kind not in _SPEC_KEYS:
        raise DataError(f"{where}: type must be \"float\", \"int\" or \"categorical\", got {kind!r}")
    extra = sorted(set(spec) - _SPEC_KEYS[kind] - {"type"})
    if extra:
        raise DataError(f"{where}: unknown key(s) {extra} for type {kind!r}; "
                        f"allowed: {sorted(_SPEC_KEYS[kind])}")
    if kind != "categorical" and isinstance(current, (bool, str)):
        raise DataError(f"{where}: the field holds {type(current).__name__} values; "
                        f"use type = \"categorical\" with choices = [...]")
    if kind == "float" and isinstance(current, int):
        raise DataError(f"{where}: the field is an integer; use type = \"int\"")
    if kind == "categorical":
        choices = spec.get("choices")
        if (not isinstance(choices, list) or not choices
                or not all(isinstance(c, (bool, int, float, str)) for c in choices)):
            raise DataError(f"{where}: choices must be a non-empty list of numbers, strings or "
                            f"booleans, e.g. choices = [300, 600, 1000]")
        if len(set(map(repr, choices))) != len(choices):
            raise DataError(f"{where}: choices {choices} repeat a value; list each once")
        return Param(key, kind, section, name, index, choices=tuple(choices))
    number = int if kind == "int" else (int, float)
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    for label, value in (("low", low), ("high", high)):
        if not isinstance(value, number) or isinstance(value, bool):
            raise DataError(f"{where}: {label} must be {'an integer' if kind == 'int' else 'a number'}, "
                            f"got {value!r}")
    if low > high:
        raise DataError(f"{where}: low {low} is above high {high}; swap them")
    if not isinstance(log, bool):
        raise DataError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise DataError(f"{where}: log = true needs low > 0, got {low}; raise low or drop log")
    if step is not None and (log or not isinstance(step, number) or isinstance(step, bool) or step <= 0):
        raise DataError(f"{where}: step must be a positive {kind} and cannot be combined with log = true")
    return Param(key, kind, section, name, index, low=low, high=high, log=log, step=step)
