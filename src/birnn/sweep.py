"""``birnn sweep``: an Optuna study over ``params.yaml``, every trial a DVC experiment and a
child MLflow run, run by any number of workers on this machine and others.

    birnn sweep [--config sweep.yaml] [--workers N] [--trials N] [--storage URL] [--study NAME]

The search space lives in ``sweep.yaml`` (validated strictly before anything starts). The
study is stored in Optuna's RDB storage: a sqlite file under ``.sweep/`` by default, or any
SQLAlchemy URL (the team PostgreSQL): the same command with the same study name and storage on
another machine joins the study. Rerunning it resumes the study.

Each worker runs trials in its own git checkout under ``.sweep/workers/`` that shares this
repository's DVC cache, so parallel trials never share a DVC workspace (DVC's repo lock); a
finished trial's experiment is fetched back here, where ``dvc exp show`` lists it and
``dvc exp apply`` restores it. Workers send Optuna heartbeats: a trial whose worker died is
marked failed by the others and retried once with the same params.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from birnn import cli
from birnn.config import params_from_dict
from birnn.errors import BirnnError, ConfigError

log = logging.getLogger("birnn.sweep")

SWEEP_DIR = Path(".sweep")
TOP_KEYS = ("study", "trials", "seed", "objective", "storage", "fixed", "space", "heartbeat_s")
# Validation metrics of reports/history.csv; a test metric must never steer a search.
OBJECTIVE_METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class TrialFailed(BirnnError):
    """A trial's pipeline run failed; the study goes on."""


# ---------------------------------------------------------------------------------------------
# sweep.yaml


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


# ---------------------------------------------------------------------------------------------
# One trial


def _as_text(dim: Dimension) -> bool:
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
    if not _as_text(dim):
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


def objective_value(history_csv: Path, metric: str, best_restored: bool) -> float:
    """The trained model's validation score: the last epoch's, or with early stopping (which
    restores the best weights) that of the epoch with the lowest val_loss."""
    with history_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows or metric not in rows[0]:
        raise TrialFailed(f"{history_csv} has no {metric} column")
    row = min(rows, key=lambda r: float(r["val_loss"])) if best_restored else rows[-1]
    value = float(row[metric])
    if not math.isfinite(value):
        raise TrialFailed(f"{metric} is {value}")
    return value


def trial_exp_name(study: str, number: int) -> str:
    return f"{study}-t{number:03d}"


# ---------------------------------------------------------------------------------------------
# Storage, checkouts, workers


def storage_url(cfg: SweepConfig, override: str | None, root: Path) -> str:
    url = override or os.environ.get("BIRNN_SWEEP_STORAGE") or cfg.storage
    return url or f"sqlite:///{(root / SWEEP_DIR / 'optuna.db').resolve()}"


def open_storage(url: str, heartbeat_s: int, on_stale: Any = None) -> Any:
    """Optuna's RDB storage with heartbeats; a stale trial is failed and retried once."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        (Path(url.removeprefix("sqlite:///")).parent).mkdir(parents=True, exist_ok=True)
        # Two workers write at once: wait for the other's transaction instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)

    def failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.warning(
            "trial %d lost its worker (no heartbeat): marked failed, retrying it", trial.number
        )
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    try:
        return RDBStorage(
            url,
            heartbeat_interval=heartbeat_s,
            grace_period=3 * heartbeat_s,
            heartbeat_stale_trial_callback=failed,
            **kwargs,
        )
    except Exception as exc:
        line = cli.service_failure(exc) or f"{type(exc).__name__}: {exc}"
        raise BirnnError(f"cannot open the study storage {_redact(url)}: {line}") from None


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def git(*args: str, cwd: Path) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BirnnError(f"git {' '.join(args)} failed in {cwd}: {res.stderr.strip()[:300]}")
    return res.stdout.strip()


def check_committed(root: Path) -> str:
    """Trials start from HEAD in their own checkouts: the pipeline must be committed."""
    dirty = git("status", "--porcelain", "--", "params.yaml", "dvc.yaml", "src", cwd=root)
    if dirty:
        first = dirty.splitlines()[0][3:]
        raise BirnnError(
            f"uncommitted changes ({first} ...): trials run from HEAD in their own checkouts; "
            "commit them first"
        )
    return git("rev-parse", "HEAD", cwd=root)


def prepare_checkout(root: Path, dest: Path, head: str) -> Path:
    """A worker's own checkout of ``head`` that uses this repo's DVC cache (shared, so a
    stage cached by any trial is restored, not re-run, by every other)."""
    if not (dest / ".git").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "-q", "--no-checkout", str(root), str(dest), cwd=root)
    git("fetch", "-q", str(root), head, cwd=dest)
    git("checkout", "-q", "--force", "--detach", head, cwd=dest)
    # A worker killed mid-trial leaves DVC's lock files behind; the checkout is this worker's.
    for stale in ("lock", "rwlock"):
        (dest / ".dvc" / "tmp" / stale).unlink(missing_ok=True)
    cache = subprocess.run(
        [sys.executable, "-m", "dvc", "cache", "dir"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Outputs are links into the shared cache, not copies (DVC unlinks one before a stage
    # rewrites it), so a checkout costs no more disk than its code.
    for args in (["cache", "dir", "--local", cache], ["config", "--local", "cache.type",
                 "hardlink,symlink,copy"]):  # fmt: skip
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=dest, capture_output=True,
                       text=True, check=True)  # fmt: skip
    return dest


@contextlib.contextmanager
def heartbeat(storage: Any, trial_id: int, every_s: int) -> Iterator[None]:
    """Record the trial's heartbeat every ``every_s`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(every_s)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trial(
    cfg: SweepConfig,
    checkout: Path,
    overrides: Mapping[str, Any],
    name: str,
    env: Mapping[str, str],
) -> float:
    """``dvc exp run`` of one trial in the worker's checkout; its objective value."""
    git("checkout", "-q", "--force", "--", "params.yaml", cwd=checkout)
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "-n", name, *set_args(overrides)]
    log.info("trial %s: %s", name, " ".join(cmd[3:]))
    with (checkout / f".{name}.log").open("w") as out:
        res = subprocess.run(
            cmd, cwd=checkout, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    if res.returncode != 0:
        lines = (checkout / f".{name}.log").read_text(errors="replace").strip().splitlines()
        errors = [ln for ln in lines if ": error:" in ln or ln.startswith("ERROR")]
        raise TrialFailed(f"dvc exp run exited {res.returncode}: {(errors or lines or [''])[-1]}")
    try:
        params = yaml.safe_load((checkout / "params.yaml").read_text())
        restored = params["train"].get("early_stopping_patience") is not None
        history = checkout / "reports/history.csv"
        return objective_value(history, cfg.metric, restored)
    except (OSError, ValueError, KeyError) as exc:
        raise TrialFailed(f"no {cfg.metric} from the run: {exc}") from None


def fetch_experiment(root: Path, checkout: Path) -> None:
    """Bring the checkout's experiment refs here (one fetch at a time: git locks refs)."""
    from filelock import FileLock

    with FileLock(str(root / SWEEP_DIR / "git-fetch.lock")):
        git("fetch", "-q", str(checkout), "+refs/exps/*:refs/exps/*", cwd=root)


def worker(cfg: SweepConfig, url: str, worker_id: str, root: Path) -> int:
    """Ask for trials and run them until the study has ``cfg.trials`` complete ones."""
    import optuna

    from birnn import tracking

    head = check_committed(root)
    storage = open_storage(url, cfg.heartbeat_s, on_stale=tracking.mark_trial_runs_killed)
    study = optuna.load_study(
        study_name=cfg.study,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=_worker_seed(cfg, worker_id)),
    )
    checkout = prepare_checkout(
        root, root / SWEEP_DIR / "workers" / f"{cfg.study}-{worker_id}", head
    )
    parent = study.user_attrs.get("mlflow_parent_run_id", "")
    raw_params = yaml.safe_load((checkout / "params.yaml").read_text())
    done = 0
    failures = 0
    last_error = name = ""
    while True:
        optuna.storages.fail_stale_trials(study)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        complete = states.count(optuna.trial.TrialState.COMPLETE)
        running = states.count(optuna.trial.TrialState.RUNNING)
        waiting = states.count(optuna.trial.TrialState.WAITING)
        if complete >= cfg.trials:
            break
        if complete + running >= cfg.trials and not waiting:
            time.sleep(cfg.heartbeat_s)  # the last trials are running elsewhere; stay to retry
            continue
        if failures > cfg.trials:
            raise BirnnError(
                f"worker {worker_id} stops after {failures} failed trials; the last: {last_error} "
                f"(its log: {checkout / ('.' + name + '.log')})"
            )
        trial = study.ask()
        values = {**cfg.fixed, **{d.key: suggest(trial, d) for d in cfg.space}}
        overrides = broadcast(raw_params, values)
        name = trial_exp_name(cfg.study, trial.number)
        trial.set_user_attr("dvc_exp", name)
        trial.set_user_attr("worker", worker_id)
        env = {
            # The stages run with this environment's Python and the checkout's own code.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(checkout / "src"),
            "BIRNN_SWEEP_PARENT_RUN_ID": parent,
            "BIRNN_SWEEP_TRIAL": f"{cfg.study}:{trial.number}",
            "BIRNN_REGISTRY": os.environ.get("BIRNN_SWEEP_REGISTRY", "off"),
        }
        try:
            with heartbeat(storage, trial._trial_id, cfg.heartbeat_s):
                value = run_trial(cfg, checkout, overrides, name, env)
            fetch_experiment(root, checkout)
        except TrialFailed as exc:
            log.warning("trial %d failed: %s", trial.number, exc)
            last_error = str(exc)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failures += 1
            continue
        except KeyboardInterrupt:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        study.tell(trial, value)
        done += 1
        log.info("trial %d (%s): %s = %.4f", trial.number, name, cfg.metric, value)
    return done


def _worker_seed(cfg: SweepConfig, worker_id: str) -> int:
    """Each worker's sampler gets its own seed, derived from the study's and its id."""
    return (cfg.seed * 1_000_003 + zlib.crc32(worker_id.encode())) % 2**32


def run_sweep(cfg: SweepConfig, url: str, workers: int, root: Path, config: Path) -> Any:
    """Create or resume the study and its parent MLflow run, run ``workers`` worker processes,
    then log the summary to the parent run; the study."""
    import optuna

    from birnn import tracking

    check_committed(root)
    storage = open_storage(url, cfg.heartbeat_s)
    sampler = optuna.samplers.TPESampler(seed=cfg.seed)
    study = optuna.create_study(
        study_name=cfg.study,
        storage=storage,
        sampler=sampler,
        direction=cfg.direction,
        load_if_exists=True,
    )
    if "mlflow_parent_run_id" not in study.user_attrs:
        study.set_user_attr("mlflow_parent_run_id", tracking.start_sweep_run(cfg, _redact(url)))
    parent = study.user_attrs["mlflow_parent_run_id"]
    log.info(
        "study %r in %s: %d trials wanted, MLflow parent run %s",
        cfg.study,
        _redact(url),
        cfg.trials,
        parent,
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "birnn.sweep",
                "--worker",
                f"{socket.gethostname()}-{k}",
                "--storage",
                url,
                "--study",
                cfg.study,
                "--trials",
                str(cfg.trials),
                "--config",
                str(config),
            ],
            cwd=root,
        )
        for k in range(workers)
    ]
    codes = [p.wait() for p in procs]
    study = optuna.load_study(study_name=cfg.study, storage=storage)
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if complete < cfg.trials:
        tracking.finish_sweep_run(parent, study, cfg)
        raise BirnnError(
            f"{complete} of {cfg.trials} trials complete; workers exited {codes} (their errors "
            "are above); rerun the command to resume the study"
        )
    if any(codes):
        log.warning("workers exited %s, but the study has its %d trials", codes, cfg.trials)
    tracking.finish_sweep_run(parent, study, cfg)
    return study


def _stop_parent_run(cfg: SweepConfig, url: str) -> str:
    """Ctrl-C: the sweep's parent run KILLED (a resumed sweep finishes it); what was done."""
    import optuna

    from birnn import tracking

    try:
        parent = optuna.load_study(study_name=cfg.study, storage=url).user_attrs.get(
            "mlflow_parent_run_id"
        )
        if parent:
            tracking.end_sweep_run(parent, "KILLED")
            return f", parent run {parent} marked KILLED"
    except Exception as exc:  # interrupted before the study or its run existed
        log.debug("no sweep run to stop: %s", exc)
    return ""


def best_commands(cfg: SweepConfig, study: Any, raw_params: Mapping[str, Any]) -> list[str]:
    """``dvc exp apply`` of the best trial, and the ``dvc exp run -S ...`` that reproduces it."""
    best = study.best_trial
    searched = {
        d.key: yaml.safe_load(best.params[d.key]) if _as_text(d) else best.params[d.key]
        for d in cfg.space
    }
    overrides = {**cfg.fixed, **searched}
    args = set_args(broadcast(raw_params, overrides))
    sets = " ".join(f"'{a}'" if a != "-S" else a for a in args)
    return [f"dvc exp apply {best.user_attrs.get('dvc_exp', '?')}", f"dvc exp run {sets}"]


def _quiet() -> None:
    """Optuna flags its heartbeat API experimental, and ask() with heartbeats unusual: we
    record the heartbeats ourselves. TensorFlow's start-up lines are noise here too."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> None:
    """``birnn sweep`` (and, internally, one worker with ``--worker ID``)."""
    parser = argparse.ArgumentParser(prog="birnn sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="sweep.yaml", help="the search (default sweep.yaml)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    parser.add_argument("--trials", type=int, help="complete trials wanted (overrides the file)")
    parser.add_argument("--storage", help="study storage URL (default sqlite under .sweep/)")
    parser.add_argument("--study", help="study name (overrides the file)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cli.setup_logging()
    _quiet()
    with cli.one_line_errors("birnn sweep"):
        config = Path(args.config)
        cfg = load_sweep(config)
        if args.trials is not None or args.study:
            if args.trials is not None and args.trials < 1:
                raise ConfigError("--trials must be at least 1")
            cfg = replace(cfg, trials=args.trials or cfg.trials, study=args.study or cfg.study)
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")
        root = Path.cwd()
        url = storage_url(cfg, args.storage, root)
        if args.worker:
            # Workers log where the sweep does: this project's store unless one is set.
            from birnn import tracking

            os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.default_uri())
            try:
                worker(cfg, url, args.worker, root)
            except KeyboardInterrupt:
                log.warning("worker %s interrupted: its running trial is marked failed",
                            args.worker)  # fmt: skip
                sys.exit(130)
            return
        try:
            study = run_sweep(cfg, url, args.workers, root, config)
        except KeyboardInterrupt:
            log.warning("interrupted: running trials were stopped%s; rerun the same command to "
                        "resume the study", _stop_parent_run(cfg, url))  # fmt: skip
            sys.exit(130)
        best = study.best_trial
        log.info(
            "best trial %d: %s = %.4f with %s", best.number, cfg.metric, best.value, best.params
        )
        raw_params = yaml.safe_load(Path("params.yaml").read_text())
        for line in best_commands(cfg, study, raw_params):
            print(line)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, cli._raise_interrupt)
    main()
