"""``birnn promote``: the one step that moves ``champion``, to the model a commit's ``dvc.lock``
names (``HEAD`` by default; CI runs it on every push to main).

    birnn promote                  # HEAD's committed dvc.lock -> champion, if the policy agrees
    birnn promote --rev v1.2       # another revision's model
    birnn promote --dry-run        # the decision and its reason; no version, tag or alias written
    birnn promote --rollback       # champion back to `previous` (and the rolled-back one blocked)
    birnn promote --history        # every move of champion: when, what, from which commit, who

Promises:

- The target is exactly the model file that the revision's ``dvc.lock`` names (its DVC md5).
  The version registered for it (by evaluate, anywhere) is found by that md5 or by its weights
  digest; when none exists, the file comes from the DVC cache or, failing that, the DVC remote
  (``dvc fetch`` of that revision), and is registered with that revision's params and
  ``reports/metrics.json``, linked to the training run its ``reports/train.json`` names.
- The decision follows the revision's ``params.yaml``: ``registry.metric``, its direction and
  ``registry.min_improvement`` against the champion, and ``evaluate.min_test_accuracy`` as a
  floor. ``--force`` overrides the comparison (and a rollback's block), never the floor;
  ``--allow-below-floor`` overrides the floor. The registered name is per dataset, so a model
  of another dataset never competes.
- Idempotent: promoting the champion again writes nothing and says so. The audit tags are
  written before any alias moves (:func:`birnn.registry.move_champion`), so a kill at any point
  leaves the old champion in place or the new one with its record; running it again finishes.
- Two promotes of the same revision at once end with one version and one champion: both pick
  the lowest version of the model, and a process that registered a duplicate deletes it.
- Every outcome is one line on stdout: promoted, kept (why), refused (why), nothing to do.
  Exit status 0, except refused and errors (1).

Why one module of ~400 lines: the decision (:func:`decide`, pure), its inputs and the three
commands (promote, rollback, history) share the one-line outcomes; the revision it reads is
:mod:`birnn.revision` and every registry write is :mod:`birnn.registry`.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from birnn import paths, revision
from birnn.config import Params, load_params
from birnn.errors import BirnnError
from birnn.revision import MODEL_PATH, Target

log = logging.getLogger(__name__)

PROG = "birnn promote"
RECHECKS = 3  # decisions re-made when another promote moved the champion meanwhile
SCORE_DECIMALS = 6  # as registry.register tags scores


class Refused(BirnnError):
    """The policy says no: printed as ``refused: ...``, exit status 1."""


@dataclass(frozen=True)
class Decision:
    """``promote``, ``keep``, ``refuse`` or ``noop``, and why."""

    action: str
    reason: str


def decide(
    params: Params,
    score: float | None,
    accuracy: float | None,
    target_version: str | None,
    champion_version: str | None,
    champion_score: float | None,
    blocked: str | None = None,
    force: bool = False,
    allow_below_floor: bool = False,
) -> Decision:
    """The promotion decision, from scores alone (no I/O)."""
    from birnn.registry import Policy

    policy = Policy.from_params(params)
    metric = policy.metric
    floor = params.evaluate.min_test_accuracy
    if target_version is not None and target_version == champion_version:
        return Decision("noop", f"version {target_version} is already champion")
    if score is None:
        return Decision("refuse", f"the model has no {metric} in reports/metrics.json")
    if not allow_below_floor and (accuracy is None or accuracy < floor):
        shown = "none" if accuracy is None else f"{accuracy:.4f}"
        return Decision(
            "refuse",
            f"test_accuracy {shown} is below evaluate.min_test_accuracy {floor} "
            "(--allow-below-floor to promote it anyway)",
        )
    if blocked and not force:
        return Decision("refuse", f"it was {blocked} (--force to promote it again)")
    if champion_version is None:
        return Decision("promote", f"{metric} {score:.4f}; there was no champion")
    if force:
        return Decision("promote", f"--force over version {champion_version}")
    if champion_score is None:
        return Decision(
            "keep",
            f"champion version {champion_version} has no {metric} to compare with "
            "(--force to replace it)",
        )
    if policy.beats(score, champion_score):
        return Decision(
            "promote",
            f"{metric} {score:.4f} beats version {champion_version}'s {champion_score:.4f}",
        )
    margin = f" by more than {policy.min_improvement}" if policy.min_improvement else ""
    return Decision(
        "keep",
        f"{metric} {score:.4f} does not beat version {champion_version}'s "
        f"{champion_score:.4f}{margin}",
    )


def target_version(client: Any, target: Target, dry_run: bool) -> tuple[Any, str]:
    """The registered version of the target's model, registering it when there is none.
    Returns (version or None on a dry run, a note on how it was found)."""
    from birnn import registry, tracking

    name = target.params.registered_model_name
    code_sha = tracking.model_code_digest()
    found = registry.canonical(
        registry.versions_of_model(client, name, target.model_md5, target.weights_sha), code_sha
    )
    if found is not None:
        return found, ""
    if dry_run:
        return None, f"{MODEL_PATH} of {target.short} is not registered yet (it would be)"
    model = revision.model_file(target)
    with tempfile.TemporaryDirectory() as tmp:
        # Keras loads a model only from a name ending in .keras; the DVC cache's has none.
        named = Path(tmp) / paths.MODEL_FILE.name
        shutil.copyfile(model, named)
        return register_committed(client, target, named, code_sha)


def register_committed(client: Any, target: Target, model: Path, code_sha: str) -> tuple[Any, str]:
    """Register the revision's model file as a new version (see :func:`target_version`)."""
    from birnn import registry, tracking

    name = target.params.registered_model_name
    tags = {
        "git.commit": target.commit,
        "mlflow.source.git.commit": target.commit.removesuffix("+workspace"),
        "birnn.registered_by": "birnn promote",
    }
    if target.train_run_id:
        tags["birnn.train_run_id"] = target.train_run_id
        tags["mlflow.note.content"] = (
            f"Model of {target.short}'s dvc.lock, trained in run {target.train_run_id}, "
            "registered by `birnn promote`."
        )
    run_id, uri = tracking.log_committed_model(
        target.params, model, f"promote-{target.short}", target.metrics, tags
    )
    version = registry.register(
        client,
        name,
        uri,
        target.metrics,
        {
            "run_id": run_id,
            registry.MODEL_MD5: target.model_md5,
            **({registry.WEIGHTS: target.weights_sha} if target.weights_sha else {}),
            registry.MODEL_CODE: code_sha,
            "git.commit": target.commit,
            "birnn.registered_by": "birnn promote",
            **({"birnn.train_run_id": target.train_run_id} if target.train_run_id else {}),
        },
    )
    # Another promote of the same revision may have registered it at the same time: the
    # lowest version wins, and whoever registered a higher one deletes its own.
    winner = registry.canonical(
        registry.versions_of_model(client, name, target.model_md5, target.weights_sha), code_sha
    )
    if winner is not None and winner.version != version.version:
        registry.delete_version(client, name, version.version)
        return winner, f"version {winner.version} was registered at the same time"
    return version, f"registered {MODEL_PATH} of {target.short} as version {version.version}"


# ---------------------------------------------------------------------------------------------
# The three commands


def actor() -> str:
    """Who moves the champion: the GitHub actor and run in Actions, else user@host."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        run = os.environ.get("GITHUB_RUN_ID", "?")
        return f"{os.environ.get('GITHUB_ACTOR', 'github-actions')} (GitHub Actions run {run})"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def promote(args: argparse.Namespace) -> int:
    from birnn import registry, tracking

    target = revision.read_target(args.rev, args.workspace)
    if args.rev == "HEAD" and not args.workspace and revision.uncommitted_lock():
        log.warning(
            "dvc.lock has uncommitted changes: promoting HEAD's committed model (commit them "
            "first, or --workspace, to promote the new one)"
        )
    name = target.params.registered_model_name
    client = tracking.connect(target.params)
    version, note = target_version(client, target, args.dry_run)
    if note:
        log.info("%s", note)
    which = f"{name} version {version.version if version else '(new)'} ({target.short})"
    champ = registry.alias(client, name, registry.CHAMPION)
    for _ in range(RECHECKS):
        decision = decide_for(client, target, version, champ, args)
        if decision.action != "promote" or args.dry_run:
            break
        # Read-compare-set is not atomic: if another promote moved the alias since it was
        # read, decide again against the champion now in place.
        now = registry.alias(client, name, registry.CHAMPION)
        if (now and now.version) != (champ and champ.version):
            champ = now
            continue
        move = registry.Move(
            action="promote",
            version=str(version.version),
            previous=None if champ is None else str(champ.version),
            commit=target.commit,
            reason=decision.reason,
            by=actor(),
            at=now_utc(),
        )
        registry.move_champion(client, name, move)
        break
    else:
        raise BirnnError(f"the champion of {name} kept moving while deciding: run it again")
    finished = args.dry_run or decision.action != "noop" or registry.recorded(client, name, champ)
    if not finished:
        # A kill after the alias moved and before the history record: finish the record.
        move = registry.Move.from_tags(str(champ.version), champ.tags)
        registry.record_move(client, name, move)
    return report(decision, which, args.dry_run, champ)


def decide_for(client: Any, target: Target, version: Any, champ: Any, args: Any) -> Decision:
    """:func:`decide` with the scores read from the target's metrics and the registry."""
    from birnn import registry

    policy = registry.Policy.from_params(target.params)
    score = target.metrics.get(policy.metric)
    old = None if champ is None else registry.score_of(client, champ, policy.metric)
    return decide(
        target.params,
        # Both as the registry keeps them (6 decimals), so a tie is a tie.
        None if score is None else round(float(score), SCORE_DECIMALS),
        target.metrics.get("test_accuracy"),
        None if version is None else str(version.version),
        None if champ is None else str(champ.version),
        None if old is None else round(old, SCORE_DECIMALS),
        blocked=None if version is None else version.tags.get(registry.BLOCKED),
        force=args.force,
        allow_below_floor=args.allow_below_floor,
    )


def report(decision: Decision, which: str, dry_run: bool, champ: Any) -> int:
    """Print the outcome's one line; return the exit status."""
    if decision.action == "promote":
        line = f"{'would promote' if dry_run else 'promoted'} {which}: {decision.reason}"
    elif decision.action == "keep":
        kept = "would keep" if dry_run else "kept"
        line = f"{kept} version {champ.version} as champion, not {which}: {decision.reason}"
    elif decision.action == "noop":
        line = f"nothing to do: {which} is already champion"
    else:
        line = f"{'would refuse' if dry_run else 'refused'} {which}: {decision.reason}"
    print(f"{PROG}: {'(dry run) ' if dry_run else ''}{line}")
    return 1 if decision.action == "refuse" else 0


def rollback(args: argparse.Namespace) -> int:
    from birnn import lineage, registry, tracking

    params = workspace_params()
    name = params.registered_model_name
    client = tracking.connect(params)
    champ = registry.alias(client, name, registry.CHAMPION)
    prev = registry.alias(client, name, registry.PREVIOUS)
    if champ is None:
        raise Refused(f"{name} has no champion to roll back")
    if prev is None or prev.version == champ.version:
        raise Refused(f"{name} has no previous champion to roll back to")
    if registry.BLOCKED in prev.tags:
        raise Refused(f"{name} version {prev.version} was {prev.tags[registry.BLOCKED]}")
    reason = f"rollback from version {champ.version}"
    if args.dry_run:
        print(f"{PROG}: (dry run) would roll {name} back to version {prev.version}: {reason}")
        return 0
    by, at = actor(), now_utc()
    commit = lineage.git("rev-parse", "HEAD") or "unknown"
    # Blocked first: a kill before the alias moves leaves a blocked champion, and the same
    # --rollback run again finishes (previous is still there).
    registry.block(client, name, str(champ.version), f"rolled back at {at} by {by}")
    registry.move_champion(
        client,
        name,
        registry.Move("rollback", str(prev.version), str(champ.version), commit, reason, by, at),
    )
    print(
        f"{PROG}: rolled {name} back to version {prev.version} (version {champ.version} is "
        "blocked: a later promote refuses it unless --force; revert main's dvc.lock to keep it out)"
    )
    return 0


def show_history(args: argparse.Namespace) -> int:
    from birnn import registry, tracking

    params = workspace_params()
    name = params.registered_model_name
    client = tracking.connect(params)
    moves = registry.history(client, name)
    if not moves:
        print(f"{PROG}: {name}: champion was never moved by birnn promote")
    for m in moves:
        was = m.get("previous") or "none"
        print(
            f"{m.get('at')}  {m.get('action'):8s}  version {m.get('version')} (was {was})  "
            f"commit {str(m.get('commit'))[:7]}  by {m.get('by')}: {m.get('reason')}"
        )
    return 0


def workspace_params() -> Params:
    return load_params(paths.PARAMS)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Make the model that a commit's dvc.lock names the champion (the one step "
        "that moves the `champion` alias), roll it back, or show its history.",
    )
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--rev", default="HEAD", help="git revision whose committed dvc.lock "
                      "names the model (default HEAD)")  # fmt: skip
    what.add_argument("--workspace", action="store_true", help="the workspace's (uncommitted) "
                      "dvc.lock instead: for a personal store, not for CI")  # fmt: skip
    what.add_argument("--rollback", action="store_true",
                      help="move champion back to the `previous` alias")  # fmt: skip
    what.add_argument("--history", action="store_true",
                      help="every move of champion: when, what, commit, who, why")  # fmt: skip
    ap.add_argument("--dry-run", action="store_true",
                    help="print the decision; write no version, tag or alias")  # fmt: skip
    ap.add_argument("--force", action="store_true", help="promote even if the model does not "
                    "beat the champion (or was rolled back); the floor still holds")  # fmt: skip
    ap.add_argument("--allow-below-floor", action="store_true",
                    help="promote even below evaluate.min_test_accuracy")  # fmt: skip
    ap.add_argument("--verbose", action="store_true", help="log what happens on stderr")
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    """``birnn promote``"""
    from birnn.stage import one_line_errors, setup_logging

    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # stdout is the outcome's one line: no "View run ... at" from MLflow's client there.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    setup_logging()
    if not args.verbose:
        # The outcome is one line on stdout; MLflow's and DVC's chatter stays out of the way.
        for name in ("birnn", "mlflow", "dvc", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow warns about the pyfunc's type hints whenever the model's module is imported.
    warnings.filterwarnings("ignore", message=".*[Tt]ype hint", category=UserWarning)
    with one_line_errors(PROG):
        try:
            if args.history:
                code = show_history(args)
            elif args.rollback:
                code = rollback(args)
            else:
                code = promote(args)
        except Refused as exc:
            print(f"{PROG}: refused: {exc}")
            code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
