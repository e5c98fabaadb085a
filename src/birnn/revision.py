"""What a git revision says its model is: the ``models/model.keras`` that its committed
``dvc.lock`` names, with the params, metrics and training run committed beside it; and that
model's file, from the workspace, the DVC cache, or the DVC remote.

Fails with one line (:class:`~birnn.errors.DataError`) for an unknown revision, a revision with
no ``dvc.lock``, ``params.yaml`` or ``reports/metrics.json``, and a model that is neither cached
nor on the remote. Reads only: the one write is ``dvc fetch`` into the DVC cache.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from birnn import paths
from birnn.config import REMOVED_KEYS, Params, params_from_dict
from birnn.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MODEL_PATH = paths.MODEL_FILE.as_posix()


@dataclass(frozen=True)
class Target:
    """What one revision says its model is."""

    rev: str  # as the user named it
    commit: str  # full sha; "<sha>+workspace" for --workspace
    params: Params
    model_md5: str
    weights_sha: str | None
    train_run_id: str | None
    metrics: dict[str, Any]

    @property
    def short(self) -> str:
        return self.commit[:7] + ("+workspace" if self.commit.endswith("+workspace") else "")


def git(*args: str) -> str:
    res = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["git failed"])[0]
        raise DataError(f"git {' '.join(args)}: {first}")
    return res.stdout


def read_at(rev: str | None, path: str) -> str | None:
    """A committed file's text at ``rev`` (the workspace's when ``rev`` is None), or None."""
    if rev is None:
        p = Path(path)
        return p.read_text() if p.is_file() else None
    res = subprocess.run(
        ["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=False
    )
    return res.stdout if res.returncode == 0 else None


def lock_model_md5(lock: str | dict) -> str | None:
    """The md5 ``dvc.lock`` (its text, or parsed) records for ``models/model.keras``."""
    if isinstance(lock, str):
        lock = yaml.safe_load(lock) or {}
    for stage in (lock.get("stages") or {}).values():
        for out in (stage or {}).get("outs") or []:
            if out.get("path") == MODEL_PATH and out.get("md5"):
                return str(out["md5"])
    return None


def read_target(rev: str, workspace: bool = False) -> Target:
    """The model, params and metrics that ``rev``'s committed files (or the workspace's) name."""
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except DataError:
        git("rev-parse", "--git-dir")  # outside a git repo: git's own message
        raise DataError(f"unknown revision {rev!r}") from None
    where = f"the workspace of {commit[:7]}" if workspace else f"{rev} ({commit[:7]})"
    at = None if workspace else commit
    lock = read_at(at, "dvc.lock")
    if lock is None:
        raise DataError(f"{where} has no dvc.lock: run `dvc repro` and commit dvc.lock first")
    md5 = lock_model_md5(_parsed(lock, "dvc.lock", where, yaml.safe_load))
    if md5 is None:
        raise DataError(f"dvc.lock of {where} names no {MODEL_PATH}: run `dvc repro` first")
    text = read_at(at, str(paths.PARAMS))
    if text is None:
        raise DataError(f"{where} has no params.yaml")
    raw = _parsed(text, "params.yaml", where, yaml.safe_load)
    try:
        params = params_from_dict(without_removed_keys(raw))
    except ConfigError as exc:
        raise ConfigError(f"params.yaml of {where}: {exc}") from None
    metrics_text = read_at(at, paths.METRICS_JSON.as_posix())
    if metrics_text is None:
        raise DataError(f"{where} has no {paths.METRICS_JSON}: run `dvc repro` and commit it")
    train_text = read_at(at, paths.TRAIN_JSON.as_posix()) or "{}"
    train = _parsed(train_text, paths.TRAIN_JSON.as_posix(), where, json.loads)
    return Target(
        rev=rev,
        commit=commit + ("+workspace" if workspace else ""),
        params=params,
        model_md5=md5,
        weights_sha=train.get("weights_sha256") or None,
        train_run_id=train.get("mlflow_run_id") or None,
        metrics=_parsed(metrics_text, paths.METRICS_JSON.as_posix(), where, json.loads),
    )


def _parsed(text: str, name: str, where: str, parse: Any) -> Any:
    """``parse(text)`` as a mapping, or one line naming the file (a merge conflict, say)."""
    try:
        value = parse(text)
    except (yaml.YAMLError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(f"{name} of {where} cannot be read: {first}") from None
    if not isinstance(value, dict):
        raise DataError(f"{name} of {where} is not a mapping")
    return value


def without_removed_keys(raw: dict) -> dict:
    """An older revision's params with the keys this code no longer knows (and says so for a
    working tree) left out: its model is still promotable."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for dotted in REMOVED_KEYS:
        section, key = dotted.split(".", 1)
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


def uncommitted_lock() -> bool:
    res = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "dvc.lock"], capture_output=True, check=False
    )
    return res.returncode == 1


def model_file(target: Target) -> Path:
    """The revision's model file: the workspace's if it is that one, else the DVC cache's,
    fetched from the DVC remote when the cache lacks it."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from birnn import lineage

    here = paths.MODEL_FILE
    if here.is_file() and lineage.dvc_md5(here) == target.model_md5:
        return here
    with Repo(".") as repo:
        cached = Path(repo.cache.repo.oid_to_path(target.model_md5))
        if not cached.is_file():
            log.info("fetching %s of %s from the DVC remote", MODEL_PATH, target.short)
            try:
                if target.commit.endswith("+workspace"):
                    repo.fetch(targets=[MODEL_PATH])
                else:
                    repo.fetch(targets=[MODEL_PATH], revs=[target.commit], workspace=False)
            except DvcException as exc:
                log.debug("dvc fetch failed", exc_info=True)
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise DataError(
                    f"{MODEL_PATH} of {target.short} (md5 {target.model_md5}) is not in the "
                    f"DVC cache and could not be fetched: {why}"
                ) from None
    if not cached.is_file():
        raise DataError(
            f"{MODEL_PATH} of {target.short} (md5 {target.model_md5}) is neither in the DVC "
            "cache nor on the DVC remote: `dvc push` it from where it was trained"
        )
    return cached
