"""Named kill points: the windows between two writes where a crash must leave every stated
guarantee intact, so tests can crash a real process exactly there.

``BIRNN_CRASH_AT=<point>`` (or ``<point>:<n>``, the n-th time the point is reached) makes the
process exit at once at that point with status :data:`EXIT_CODE`: ``os._exit``, no cleanup, no
``finally``, as ``kill -9`` would. Unset (always, outside tests), a point costs one dict lookup.

    python -m birnn.crash --list          every point, with the invariant a crash there keeps
    python -m birnn.crash --point NAME    a point in a shell script (exits when it is named;
                                          each call is a new process, so ``:n`` means once)

A name that :data:`POINTS` does not list is a bug in the caller (``KeyError``), so the list
cannot miss a point the code has (a shell script's ``--point`` is checked the same way);
``tests/unit/test_crash.py`` keeps the docs' table equal to it.
"""

from __future__ import annotations

import os
import sys

EXIT_CODE = 86

# point -> the invariant a crash right there must keep (what the docs and the tests hold to).
POINTS: dict[str, str] = {
    "checkpoint.files": "after an epoch's model, seed and best-weight files are written, before "
    "the state that names them: the resume starts from the previous epoch and ends with the "
    "weights and history of an uninterrupted run",
    "checkpoint.state": "after the state names the new epoch's files, before the previous "
    "epoch's are removed: the resume starts from the new epoch, same end result; after the epoch "
    "early stopping ends the run with, the resume trains no further epoch",
    "registry.audit-tags": "after the new champion's audit tags, before any alias moves: the "
    "old champion stays; promote run again moves it and records the move once",
    "registry.previous-alias": "after `previous` moved, before `champion`: the old champion "
    "stays champion; promote run again finishes the move, recorded once",
    "registry.champion-alias": "after `champion` moved, before the move is recorded: the new "
    "champion has its score and audit tags; promote run again records the move once",
    "sweep.asked": "after a trial is asked and its first heartbeat recorded, before its "
    "experiment starts: the trial goes stale, is failed and retried once with the same params "
    "(by another worker or the rerun); the study ends with exactly the trials asked for",
    "sweep.ran": "after a trial's experiment ran and came back, before the study is told: the "
    "trial is not counted: it goes stale, is failed (its finished MLflow run tagged "
    "sweep.counted=false) and retried once; the study ends with exactly the trials asked for",
    "stack.spawned": "after a stack service's process started, before its pid is recorded: "
    "the next `up` finds that process by the stack's marker in its environment, stops it and "
    "starts the service anew (`down` stops it too); no other process is signalled",
    "ci.pushed": "scripts/ci/propose.sh: after the outputs and the branch are pushed, before the "
    "pull request is opened: the rerun (a new checkout or the same) pushes the same branch and "
    "opens the pull request, which names outputs the DVC remote holds",
}

_reached: dict[str, int] = {}


def point(name: str) -> None:
    """Exit at once if ``BIRNN_CRASH_AT`` names this point (and this is the n-th time)."""
    if name not in POINTS:
        raise KeyError(f"unknown kill point {name!r}: add it to birnn.crash.POINTS")
    wanted = os.environ.get("BIRNN_CRASH_AT")
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        print(f"birnn.crash: exiting at {name} (BIRNN_CRASH_AT={wanted})", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_CODE)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--list"]:
        for name, invariant in POINTS.items():
            print(f"{name}\t{invariant}")
    elif len(args) == 2 and args[0] == "--point" and args[1] in POINTS:
        point(args[1])
    else:
        print("usage: python -m birnn.crash --list | --point NAME (one of --list's)",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)


if __name__ == "__main__":
    main()
