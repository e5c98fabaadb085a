"""The model registry: every evaluated model becomes a version, and the ``champion`` alias
moves to it only when the promotion policy (``params.yaml``'s ``registry`` section) allows it
and it beats the current champion.

Correct under failure and concurrency:

- A version's tags (its metric, weights digest, whether it may compete) are written before the
  alias moves, so a kill in between never leaves a champion without its score.
- A champion without the metric tag (set by hand in the UI, or left by an older version of this
  code) is compared by its run's logged metric; with neither, the alias stays and the decision
  says why.
- Read-compare-set is not atomic across processes: after moving (or not moving) the alias, the
  champion is read back and compared with every competing version registered since; the best
  ends as champion whatever order two evaluations interleave in.
- The same weights are registered once: an evaluation of weights already in the registry
  (``dvc repro -f evaluate``) links to the existing version instead of adding one, unless the
  model's packaging code (its input contract) changed since.
- ``BIRNN_REGISTRY=off`` registers nothing (CI's pull-request runs).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from birnn import lineage, store
from birnn.config import SELECTION_METRICS, Params

log = logging.getLogger(__name__)

CHAMPION = "champion"
REGISTRY_ENV = "BIRNN_REGISTRY"
# Version tags this module writes.
CANDIDATE = "champion_candidate"
WEIGHTS = "weights_sha256"
MODEL_CODE = "model_code_sha256"  # the code the logged model carries (its input contract)
MAIN_BRANCHES = ("main", "master")
RECHECKS = 5


@dataclass(frozen=True)
class Policy:
    """How ``champion`` is chosen: the metric, its direction, the margin, who may promote."""

    metric: str
    higher_is_better: bool
    min_improvement: float
    promote: str

    @classmethod
    def from_params(cls, params: Params) -> Policy:
        r = params.registry
        return cls(r.metric, SELECTION_METRICS[r.metric], r.min_improvement, r.promote)

    def beats(self, new: float, old: float) -> bool:
        """Whether ``new`` is better than ``old`` by more than the minimum improvement."""
        if self.higher_is_better:
            return new > old + self.min_improvement
        return new < old - self.min_improvement


def registry_enabled() -> bool:
    """False when ``BIRNN_REGISTRY=off``: the run is logged, nothing is registered."""
    return os.environ.get(REGISTRY_ENV, "").strip().lower() not in ("off", "0", "false", "no")


def may_promote(policy: Policy) -> tuple[bool, str]:
    """Whether this run may move the alias under ``registry.promote``, and why (not)."""
    if policy.promote == "always":
        return True, "registry.promote=always"
    if policy.promote == "never":
        return False, "registry.promote=never"
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        return False, f"registry.promote=auto and this is DVC experiment {exp!r}"
    branch = lineage.git_branch()
    if branch not in MAIN_BRANCHES:
        return False, f"registry.promote=auto and the branch is {branch or 'unknown'!r}, not main"
    changed = lineage.uncommitted_changes()
    if changed:
        shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
        return False, f"registry.promote=auto and uncommitted changes: {shown}"
    return True, "registry.promote=auto on main with a clean tree"


def version_by_weights(
    client: MlflowClient, name: str, weights_sha: str, code_sha: str | None = None
) -> ModelVersion | None:
    """The version that already holds these exact weights (packaged by the same model code,
    when ``code_sha`` is given: a new input contract is a new version), if any."""
    for v in _versions(client, name):
        if v.tags.get(WEIGHTS) == weights_sha and code_sha in (None, v.tags.get(MODEL_CODE)):
            return v
    return None


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    try:
        return list(client.search_model_versions(f"name='{name}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
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
    params: Params,
    model_uri: str,
    metrics: dict[str, float],
    run_id: str,
    weights_sha: str,
    code_sha: str | None = None,
) -> dict[str, Any]:
    """Register ``model_uri`` as a new version with its tags, then decide the champion."""
    name = params.registered_model_name
    client = store.Retrying(client)
    policy = Policy.from_params(params)
    allowed, why = may_promote(policy)
    score = float(metrics[policy.metric])
    version = store.retrying(mlflow.register_model)(model_uri, name).version
    # Tags first: the alias must never point at a version whose score is not yet recorded.
    tags = {
        policy.metric: f"{score:.6f}",
        WEIGHTS: weights_sha,
        CANDIDATE: str(allowed).lower(),
        "run_id": run_id,
    }
    if code_sha:
        tags[MODEL_CODE] = code_sha
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if allowed:
        decision, before = promote(client, name, policy, version, score)
    else:
        champ = _champion(client, name)
        decision = f"not a candidate: {why}"
        before = score_of(client, champ, policy.metric) if champ else None
    client.set_model_version_tag(name, version, "champion_decision", decision)
    client.set_model_version_tag(
        name,
        version,
        f"champion_{policy.metric}_before",
        "none" if before is None else f"{before:.6f}",
    )
    store.retrying(mlflow.set_tags)(
        {"registry.version": str(version), "registry.decision": decision}
    )
    log.info("registered %s version %s: %s", name, version, decision)
    return {"version": int(version), "decision": decision}


def link_existing(version: ModelVersion) -> None:
    """Tag the active run with the version that already holds its weights."""
    decision = f"same weights as version {version.version}: not registered again"
    store.retrying(mlflow.set_tags)(
        {"registry.version": str(version.version), "registry.decision": decision}
    )
    log.info("%s", decision)


def promote(
    client: MlflowClient, name: str, policy: Policy, version: str, score: float
) -> tuple[str, float | None]:
    """Move ``champion`` to ``version`` if it is better; return the decision and the old score."""
    champ = _champion(client, name)
    base = int(champ.version) if champ else 0
    before = score_of(client, champ, policy.metric) if champ else None
    if champ is None:
        client.set_registered_model_alias(name, CHAMPION, version)
        decision = "promoted: there was no champion"
    elif before is None:
        decision = (
            f"not promoted: champion version {champ.version} has no {policy.metric} "
            "(neither a tag nor a run metric); set the alias by hand"
        )
        log.warning("%s", decision)
        return decision, None
    elif policy.beats(score, before):
        client.set_registered_model_alias(name, CHAMPION, version)
        decision = f"promoted over version {champ.version}"
    else:
        decision = f"kept version {champ.version} as champion"
    settled = settle(client, name, policy, base)
    if settled is not None:
        decision += f"; then version {settled} won a concurrent promotion"
    return decision, before


def settle(client: MlflowClient, name: str, policy: Policy, base: int) -> str | None:
    """Re-read the champion and move it to any better candidate registered after ``base``.

    Two evaluations promoting at once may each have compared against a stale champion; every
    promoter runs this after its own move, so the last one to finish leaves the best in place.
    Returns the version this call moved the alias to, if it moved it.
    """
    moved = None
    for _ in range(RECHECKS):
        champ = _champion(client, name)
        champ_score = score_of(client, champ, policy.metric) if champ else None
        if champ is not None and champ_score is None:
            return moved  # a champion of unknown score was set by hand: leave it
        best, best_score = champ, champ_score
        for v in _versions(client, name):
            if int(v.version) <= base or v.tags.get(CANDIDATE) != "true":
                continue
            s = score_of(client, v, policy.metric)
            if s is None or (champ is not None and v.version == champ.version):
                continue
            if best_score is None or policy.beats(s, best_score):
                best, best_score = v, s
        if best is None or (champ is not None and best.version == champ.version):
            return moved
        client.set_registered_model_alias(name, CHAMPION, best.version)
        moved = best.version
    return moved
