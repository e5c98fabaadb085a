"""``sweep.yaml``: its strict schema, the search space it declares, and how a trial's values
become ``dvc exp run -S`` arguments.

Every value a dimension can take is checked against ``params.yaml``'s own validation before
anything starts, so a bad file fails with one line naming the key (:class:`ConfigError`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from birnn.config import params_from_dict
from birnn.errors import ConfigError

SWEEP_DIR = Path(".sweep")


TOP_KEYS = ("study", "trials", "seed", "objective", "storage", "fixed", "space", "heartbeat_s")


# Validation metrics of reports/history.csv; a test metric must never steer a search.
OBJECTIVE_METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}


STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Dimension:
    """One searched key: a float or int range, or a list of choices."""

    key: str
    kind: str  # float | int | choice
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def bounds(self) -> list[Any]:
        """Values that must each make a valid params.yaml (checked before anything starts)."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


@dataclass(frozen=True)
class SweepConfig:
    study: str
    trials: int
    seed: int
    metric: str
    direction: str
    storage: str | None
    fixed: Mapping[str, Any]
    space: tuple[Dimension, ...]
    heartbeat_s: int


def _err(message: str) -> ConfigError:
    return ConfigError(f"sweep.yaml: {message}")


def _lookup(raw_params: Mapping[str, Any], key: str) -> Any:
    section, _, name = key.partition(".")
    if not name or section not in raw_params or not isinstance(raw_params[section], Mapping):
        raise _err(f"{key!r} is not a params.yaml key (write section.name, e.g. train.epochs)")
    if name not in raw_params[section]:
        keys = ", ".join(f"{section}.{k}" for k in raw_params[section])
        raise _err(f"{key!r} is not in params.yaml; {section} has: {keys}")
    return raw_params[section][name]


def broadcast(raw_params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides as params.yaml takes them: a scalar given for a list-valued key
    (``model.units: 64`` where params has ``[50, 50]``) sets every entry (``[64, 64]``)."""
    out = {}
    for key, value in overrides.items():
        current = _lookup(raw_params, key)
        if isinstance(current, list) and not isinstance(value, list):
            value = [value] * len(current)
        out[key] = value
    return out


def apply_overrides(raw_params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """A copy of the parsed ``params.yaml`` with the dotted overrides (see :func:`broadcast`)."""
    out = copy.deepcopy(dict(raw_params))
    for key, value in broadcast(raw_params, overrides).items():
        section, name = key.split(".", 1)
        out[section][name] = value
    return out


def _dimension(key: str, spec: Any, current: Any) -> Dimension:
    if isinstance(spec, list):
        if not spec:
            raise _err(f"space.{key}: empty list of choices")
        return Dimension(key, "choice", choices=tuple(spec))
    if not isinstance(spec, Mapping):
        raise _err(f"space.{key}: give a list of choices or {{low, high[, log][, step]}}")
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown:
        raise _err(
            f"space.{key}: unknown key {sorted(unknown)[0]!r}; allowed: low, high, log, step"
        )
    if "low" not in spec or "high" not in spec:
        raise _err(f"space.{key}: a range needs both low and high")
    low, high, use_log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _err(f"space.{key}.{name} must be a number, got {value!r}")
    if not isinstance(use_log, bool):
        raise _err(f"space.{key}.log must be true or false, got {use_log!r}")
    if not low < high:
        raise _err(f"space.{key}: empty range (low {low} must be below high {high})")
    if use_log and low <= 0:
        raise _err(f"space.{key}: a log range needs low > 0, got {low}")
    if use_log and step is not None:
        raise _err(f"space.{key}: step and log cannot be combined")
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, int | float) or step <= 0
    ):
        raise _err(f"space.{key}.step must be a positive number, got {step!r}")
    sample = current[0] if isinstance(current, list) and current else current
    is_int = isinstance(sample, int) and not isinstance(sample, bool)
    if is_int and not all(isinstance(v, int) for v in (low, high, step or 1)):
        raise _err(f"space.{key}: {key} is an integer: low, high and step must be integers")
    return Dimension(key, "int" if is_int else "float", low, high, use_log, step)


def sweep_from_dict(raw: Any, raw_params: Mapping[str, Any]) -> SweepConfig:
    """Validate ``sweep.yaml`` against ``params.yaml``; every value a trial can get is checked
    to make a valid params.yaml, so a bad space stops here, not in trial 7."""
    if not isinstance(raw, Mapping):
        raise _err("must be a mapping with at least `space:`")
    for key in raw:
        if key not in TOP_KEYS:
            raise _err(f"unknown key {key!r}; allowed: {', '.join(TOP_KEYS)}")
    study = raw.get("study", "sweep")
    if not isinstance(study, str) or not STUDY_NAME.match(study):
        raise _err(f"study must be a name of letters, digits, - and _, got {study!r}")
    trials, seed, heartbeat = raw.get("trials", 12), raw.get("seed", 0), raw.get("heartbeat_s", 10)
    for name, value, low in (
        ("trials", trials, 1),
        ("seed", seed, 0),
        ("heartbeat_s", heartbeat, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _err(f"{name} must be an integer >= {low}, got {value!r}")
    objective = raw.get("objective") or {}
    if not isinstance(objective, Mapping) or set(objective) - {"metric", "direction"}:
        raise _err("objective takes metric and direction")
    metric = objective.get("metric", "val_accuracy")
    if metric not in OBJECTIVE_METRICS:
        raise _err(
            f"objective.metric must be a validation metric ({', '.join(OBJECTIVE_METRICS)}), "
            f"got {metric!r}: a search steered by the test set overfits it"
        )
    direction = objective.get("direction", OBJECTIVE_METRICS[metric])
    if direction not in ("maximize", "minimize"):
        raise _err(f"objective.direction must be maximize or minimize, got {direction!r}")
    storage = raw.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise _err(f"storage must be a database URL or null, got {storage!r}")
    fixed = raw.get("fixed") or {}
    space_raw = raw.get("space")
    if not isinstance(fixed, Mapping):
        raise _err("fixed must be a mapping of params.yaml keys to values")
    if not isinstance(space_raw, Mapping) or not space_raw:
        raise _err("space must map params.yaml keys to ranges or choices")
    for key in fixed:
        _lookup(raw_params, key)
        if key in space_raw:
            raise _err(f"{key!r} is both fixed and searched")
    space = tuple(_dimension(k, v, _lookup(raw_params, k)) for k, v in space_raw.items())
    base = apply_overrides(raw_params, fixed)
    for dim in space:
        for value in dim.bounds():
            try:
                params_from_dict(apply_overrides(base, {dim.key: value}))
            except ConfigError as exc:
                raise _err(f"space.{dim.key} value {value!r}: {exc}") from None
    return SweepConfig(
        study, trials, seed, metric, direction, storage, dict(fixed), space, heartbeat
    )


def load_sweep(path: Path, params_path: Path = Path("params.yaml")) -> SweepConfig:
    for p in (path, params_path):
        if not p.is_file():
            raise ConfigError(f"{p} not found: run from the project root")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        raw_params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {exc}") from None
    return sweep_from_dict(raw, raw_params)


def as_text(dim: Dimension) -> bool:
    """Whether the dimension's choices travel through Optuna as YAML text (Optuna takes only
    None, bool, int, float and str choices; a list such as ``[64, 64]`` is not one)."""
    return dim.kind == "choice" and not all(
        isinstance(c, str | int | float | bool) or c is None for c in dim.choices
    )


def suggest(trial: Any, dim: Dimension) -> Any:
    """The trial's value for one dimension (choices that are not plain scalars, such as lists,
    travel through Optuna as their YAML text)."""
    if dim.kind == "float":
        return trial.suggest_float(dim.key, dim.low, dim.high, log=dim.log, step=dim.step)
    if dim.kind == "int":
        return trial.suggest_int(dim.key, dim.low, dim.high, log=dim.log, step=dim.step or 1)
    if not as_text(dim):
        return trial.suggest_categorical(dim.key, list(dim.choices))
    texts = [yaml.safe_dump(c, default_flow_style=True).strip() for c in dim.choices]
    return yaml.safe_load(trial.suggest_categorical(dim.key, texts))


def set_args(overrides: Mapping[str, Any]) -> list[str]:
    """``dvc exp run`` arguments: ``-S key=value`` each, values in YAML flow style."""
    args = []
    for key, value in overrides.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix("\n...").removesuffix("...").strip()
        args += ["-S", f"{key}={text}"]
    return args


def trial_exp_name(study: str, number: int) -> str:
    return f"{study}-t{number:03d}"


def search_digest(cfg: SweepConfig) -> str:
    """What a study searches, as a digest: objective, fixed values and space (not the trial
    count or the seed, which a resumed study may change)."""

    search = {
        "metric": cfg.metric,
        "direction": cfg.direction,
        "fixed": dict(cfg.fixed),
        "space": [
            [d.key, d.kind, d.low, d.high, d.log, d.step, list(d.choices)] for d in cfg.space
        ],
    }
    return hashlib.sha256(json.dumps(search, sort_keys=True, default=str).encode()).hexdigest()
