"""The model registry: every evaluated model becomes a version; ``champion`` moves only when
``birnn promote`` (:mod:`birnn.promote`) says so, through :func:`move_champion`.

Promises, and how they hold under failure and concurrency:

- :func:`register` adds a version with its scores, weights digest, DVC md5, model code digest
  and lineage as tags, and never touches an alias. ``BIRNN_REGISTRY=off`` registers nothing.
- A move of ``champion`` writes its audit record (who, when, which commit, why, the champion
  before) as tags on the new version *before* any alias moves; then ``previous`` is pointed at
  the outgoing champion, and only then ``champion`` at the new one. A kill between two of these
  writes leaves ``champion`` where it was (and at worst ``previous`` equal to it): the same
  ``birnn promote`` run again finishes the move.
- Every completed move is kept as a ``champion.move.<ms>`` tag (JSON) on the version it moved
  to, written after the alias moved, so :func:`history` lists all of them (even when a version
  was champion twice) and none that did not happen; a kill just before that record is repaired
  by the next promote (:func:`recorded`).
- The same model is registered once: :func:`versions_of_model` finds versions by the model
  file's DVC md5 (or its weights digest), and two processes that each registered the same model
  at once keep the lowest version (:func:`canonical`); the other deletes its own duplicate.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from birnn import crash, store
from birnn.config import SELECTION_METRICS, Params

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
REGISTRY_ENV = "BIRNN_REGISTRY"
# Version tags this module writes.
WEIGHTS = "weights_sha256"
MODEL_MD5 = "model_md5"  # DVC's md5 of models/model.keras: what dvc.lock names
MODEL_CODE = "model_code_sha256"  # the code the logged model carries (its input contract)
BLOCKED = "champion_blocked"  # set by --rollback: promote refuses the version unless forced
# One id per register() call, on the version it creates: a retry finds an earlier attempt's.
REGISTRATION = "registration_id"
MOVE_PREFIX = "champion.move."


@dataclass(frozen=True)
class Policy:
    """How ``champion`` is chosen: the metric, its direction and the margin to beat."""

    metric: str
    higher_is_better: bool
    min_improvement: float

    @classmethod
    def from_params(cls, params: Params) -> Policy:
        r = params.registry
        return cls(r.metric, SELECTION_METRICS[r.metric], r.min_improvement)

    def beats(self, new: float, old: float) -> bool:
        """Whether ``new`` is better than ``old`` by more than the minimum improvement."""
        if self.higher_is_better:
            return new > old + self.min_improvement
        return new < old - self.min_improvement


def registry_enabled() -> bool:
    """False when ``BIRNN_REGISTRY=off``: the run is logged, nothing is registered."""
    return os.environ.get(REGISTRY_ENV, "").strip().lower() not in ("off", "0", "false", "no")


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name``, oldest first (none when the model is not registered)."""
    try:
        found = list(client.search_model_versions(f"name='{name}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return sorted(found, key=lambda v: int(v.version))


def version_by_weights(
    client: MlflowClient, name: str, weights_sha: str, code_sha: str | None = None
) -> ModelVersion | None:
    """The version that already holds these exact weights (packaged by the same model code,
    when ``code_sha`` is given: a new input contract is a new version), if any."""
    for v in versions(client, name):
        if v.tags.get(WEIGHTS) == weights_sha and code_sha in (None, v.tags.get(MODEL_CODE)):
            return v
    return None


def versions_of_model(
    client: MlflowClient, name: str, model_md5: str, weights_sha: str | None
) -> list[ModelVersion]:
    """Versions holding the model that ``dvc.lock`` names: those of that very file (its md5),
    else those of the same weights (the same training repeated gives a new file, whose
    timestamps differ, with the same weights)."""
    every = versions(client, name)
    same_file = [v for v in every if v.tags.get(MODEL_MD5) == model_md5]
    if same_file or not weights_sha:
        return same_file
    return [v for v in every if v.tags.get(WEIGHTS) == weights_sha]


def canonical(found: list[ModelVersion], code_sha: str | None) -> ModelVersion | None:
    """The version promote uses among those of one model: packaged by ``code_sha`` if any is,
    then the lowest number (so concurrent registrations agree)."""
    if not found:
        return None
    same_code = [v for v in found if code_sha and v.tags.get(MODEL_CODE) == code_sha]
    return min(same_code or found, key=lambda v: int(v.version))


def alias(client: MlflowClient, name: str, which: str) -> ModelVersion | None:
    """The version an alias points at, or None."""
    try:
        return client.get_model_version_by_alias(name, which)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def score_of(client: MlflowClient, version: ModelVersion, metric: str) -> float | None:
    """The version's metric: its tag, else its run's logged metric, else None."""
    if metric in version.tags:
        try:
            return float(version.tags[metric])
        except ValueError:
            pass
    if version.run_id:
        try:
            value = client.get_run(version.run_id).data.metrics.get(metric)
        except MlflowException:
            value = None
        if value is not None:
            return float(value)
    return None


def register(
    client: MlflowClient,
    name: str,
    model_uri: str,
    metrics: dict[str, float],
    tags: dict[str, str],
) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name``, tagged with its selection metrics
    and ``tags``; tag the active run (if any) with the version. No alias moves."""
    all_tags = {k: f"{float(metrics[k]):.6f}" for k in SELECTION_METRICS if k in metrics}
    all_tags.update(tags)
    all_tags[REGISTRATION] = uuid.uuid4().hex
    # Tags at creation: no version is ever visible without its digests and scores, which is
    # what lets two concurrent registrations of one model agree (see canonical()).
    version = store.retrying(_register_once)(client, model_uri, name, all_tags)
    if mlflow.active_run() is not None:
        store.retrying(mlflow.set_tags)({"registry.version": str(version)})
    log.info("registered %s version %s", name, version)
    return store.Retrying(client).get_model_version(name, version)


def _register_once(client: MlflowClient, model_uri: str, name: str, tags: dict[str, str]) -> str:
    """``mlflow.register_model`` is several writes (the registered model, the version, its
    link to the logged model) and then polls the version: "database is locked" in a later step
    than the version's creation must not create it again when :func:`store.retrying` repeats
    the call, so each attempt first looks for the version an earlier one made."""
    done = client.search_model_versions(
        f"name = '{name}' and tags.`{REGISTRATION}` = '{tags[REGISTRATION]}'"
    )
    if done:
        return done[0].version
    return mlflow.register_model(model_uri, name, tags=tags).version


def link_existing(version: ModelVersion) -> None:
    """Tag the active run with the version that already holds its weights."""
    note = f"same weights as version {version.version}: not registered again"
    store.retrying(mlflow.set_tags)(
        {"registry.version": str(version.version), "registry.note": note}
    )
    log.info("%s", note)


def delete_version(client: MlflowClient, name: str, version: str) -> None:
    """Remove a version this process registered twice by accident (see :func:`canonical`)."""
    store.Retrying(client).delete_model_version(name, version)


@dataclass(frozen=True)
class Move:
    """One move of ``champion``: what :func:`move_champion` records and :func:`history` lists."""

    action: str  # promote | rollback
    version: str
    previous: str | None
    commit: str
    reason: str
    by: str
    at: str

    def audit_tags(self) -> dict[str, str]:
        """Written on the new champion before any alias moves."""
        return {
            "promoted_at": self.at,
            "promoted_commit": self.commit,
            "promoted_previous": self.previous or "none",
            "promoted_reason": self.reason,
            "promoted_by": self.by,
            "promoted_action": self.action,
        }

    @classmethod
    def from_tags(cls, version: str, tags: dict[str, str]) -> Move | None:
        """The move a version's audit tags describe, if it has them."""
        if "promoted_at" not in tags:
            return None
        previous = tags.get("promoted_previous", "none")
        return cls(
            tags.get("promoted_action", "promote"),
            str(version),
            None if previous == "none" else previous,
            tags.get("promoted_commit", ""),
            tags.get("promoted_reason", ""),
            tags.get("promoted_by", ""),
            tags["promoted_at"],
        )


def move_champion(client: MlflowClient, name: str, move: Move) -> None:
    """Audit tags on the new champion, then ``previous``, then ``champion``; then the version's
    block (if any) is lifted and the move is added to the history (see the module's docstring).
    A rollback (``move.action == "rollback"``) drops ``previous`` instead: what it pointed at
    is the champion now, and the rolled-back version must not be offered again."""
    client = store.Retrying(client)
    for key, value in move.audit_tags().items():
        store.upsert(client.set_model_version_tag, name, move.version, key, value)
    crash.point("registry.audit-tags")
    rollback = move.action == "rollback"
    if not rollback and move.previous is not None and move.previous != move.version:
        store.upsert(client.set_registered_model_alias, name, PREVIOUS, move.previous)
        crash.point("registry.previous-alias")
    store.upsert(client.set_registered_model_alias, name, CHAMPION, move.version)
    crash.point("registry.champion-alias")
    if rollback:
        client.delete_registered_model_alias(name, PREVIOUS)
    if BLOCKED in client.get_model_version(name, move.version).tags:
        client.delete_model_version_tag(name, move.version, BLOCKED)  # chosen again on purpose
    record_move(client, name, move)
    log.info("%s: champion is version %s (was %s)", name, move.version, move.previous)


def record_move(client: MlflowClient, name: str, move: Move) -> None:
    """Add a completed move to the history (a ``champion.move.<ms>`` tag on its version).
    Written after the alias moved, so the history lists only moves that happened."""
    client = store.Retrying(client)
    if _has_record(client.get_model_version(name, move.version).tags, move):
        return  # another promote that found this move unrecorded wrote it meanwhile
    record = json.dumps(move.__dict__, sort_keys=True)
    key = f"{MOVE_PREFIX}{int(time.time() * 1000)}"
    store.upsert(client.set_model_version_tag, name, move.version, key, record)


def _has_record(tags: dict[str, str], move: Move) -> bool:
    return any(json.loads(v) == move.__dict__ for k, v in tags.items() if k.startswith(MOVE_PREFIX))


def recorded(client: MlflowClient, name: str, champion: ModelVersion) -> bool:
    """Whether the champion's last move (by its audit tags) is in the history. A kill between
    the alias and the record leaves it out; ``birnn promote`` run again writes it then."""
    move = Move.from_tags(str(champion.version), champion.tags)
    if move is None:
        return True  # set by hand, or before promote kept records: nothing to add
    return _has_record(champion.tags, move)


def block(client: MlflowClient, name: str, version: str, why: str) -> None:
    """Mark a version rolled back: ``birnn promote`` refuses it unless ``--force``."""
    store.upsert(store.Retrying(client).set_model_version_tag, name, version, BLOCKED, why)


def history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every recorded move of ``champion`` for ``name``, oldest first."""
    moves = []
    for v in versions(client, name):
        for key, value in v.tags.items():
            if not key.startswith(MOVE_PREFIX):
                continue
            try:
                record = json.loads(value)
            except json.JSONDecodeError:
                continue
            record["millis"] = int(key[len(MOVE_PREFIX) :])
            moves.append(record)
    return sorted(moves, key=lambda m: m["millis"])
