"""``birnn``: the project's one command line. Each subcommand lives in its own module and is
imported only when it runs, so ``birnn --help`` answers at once (no TensorFlow or MLflow).

    birnn predict IMAGE...     which digits do these images show (the champion by default)
    birnn serve                the champion over HTTP: follows promotions, a page, metrics
    birnn promote              make the model of the committed dvc.lock the champion
    birnn sweep                an Optuna study over params.yaml, trials as DVC experiments
    birnn stack up|down|...    the team stack (PostgreSQL, S3, mlflow server) on loopback

The pipeline's stages are not subcommands: ``dvc repro`` runs them (``python -m birnn.<stage>``).
A subcommand's own ``--help`` is complete; an unknown one exits 2 with the list. A command's
exit skips the garbage collector's last walk (:func:`birnn.stage.freeze_at_exit`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module whose main(argv) runs it, one line for `birnn --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("birnn.predict", "which digit each image shows (default: the champion)"),
    "serve": (
        "birnn.serve.cli",
        "serve the champion over HTTP (follows promotions; page, /metrics)",
    ),
    "promote": ("birnn.promote", "make the committed dvc.lock's model champion (or roll back)"),
    "sweep": ("birnn.sweep.cli", "an Optuna study over params.yaml; trials as DVC experiments"),
    "stack": ("birnn.stack.cli", "the team stack on 127.0.0.1: up | down | status | dvc-remote"),
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="birnn",
        description="A reproducible DVC + MLflow pipeline for a bidirectional RNN on MNIST. "
        "`dvc repro` runs the pipeline; these commands work with its results.",
        epilog="`birnn COMMAND --help` describes each command.",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, summary) in COMMANDS.items():
        # The command's own parser reads the rest of the line, --help included.
        sub.add_parser(name, help=summary, add_help=False)
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    """The ``birnn`` console script and ``python -m birnn``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        from birnn.stage import freeze_at_exit

        freeze_at_exit()  # exit without walking every object (a predict's TensorFlow: ~2 s)
        module = importlib.import_module(COMMANDS[args[0]][0])
        module.main(args[1:])
        return
    parser().parse_args(args)  # --help exits 0; nothing or an unknown command exits 2
