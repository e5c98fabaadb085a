"""``birnn stack``: start, check and stop the team stack; point a clone's DVC remote at it.

    birnn stack up [--dir .stack] [--mlflow-port N]   start whatever is not running
    birnn stack status                                each service: pid, port, answering or not
    birnn stack down                                  stop each service by its pid
    birnn stack dvc-remote [--repo .]                 point a clone's DVC remote at the stack

Errors are one line and exit 1; ``status`` exits 3 when a service does not answer.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from birnn import stage
from birnn.stack.core import Stack
from birnn.stack.state import BUCKET, DVC_PREFIX, DVC_REMOTE

log = logging.getLogger("birnn.stack")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="birnn stack", description="The team stack on 127.0.0.1.")
    parser.add_argument("command", choices=["up", "down", "status", "dvc-remote"])
    parser.add_argument(
        "--dir",
        default=os.environ.get("BIRNN_STACK_DIR", ".stack"),
        help="the stack's state folder (default .stack, or $BIRNN_STACK_DIR)",
    )
    parser.add_argument("--mlflow-port", type=int, help="MLflow's port on the first `up`")
    parser.add_argument("--repo", default=".", help="the clone `dvc-remote` configures")
    args = parser.parse_args(argv)  # fmt: skip
    stage.setup_logging()
    stack = Stack(args.dir)
    with stage.one_line_errors("birnn.stack"):
        if args.command == "up":
            t0 = time.monotonic()
            started = stack.up(args.mlflow_port)
            for service, seconds in started.items():
                log.info("started %s in %.1fs", service, seconds)
            took = time.monotonic() - t0
            log.info("stack up in %.1fs: MLflow at %s, S3 at %s (bucket %s)",
                     took, stack.mlflow_uri(), stack.s3_endpoint(), BUCKET)  # fmt: skip
            log.info("point a clone at it: `. %s` and `python -m birnn.stack dvc-remote`",
                     stack.env_file)  # fmt: skip
        elif args.command == "down":
            stopped = stack.down()
            log.info("stopped: %s", ", ".join(stopped) or "nothing was running")
        elif args.command == "status":
            report = stack.status()
            for service, info in report.items():
                state = "up" if info["answers"] else ("starting/hung" if info["pid"] else "down")
                print(f"{service:9} {state:13} pid={info['pid'] or '-'} port={info['port'] or '-'}")
            if not all(info["answers"] for info in report.values()):
                sys.exit(3)
        else:
            stack.configure_dvc_remote(Path(args.repo))
            log.info("DVC remote %r -> s3://%s/%s at %s (credentials in .dvc/config.local)",
                     DVC_REMOTE, BUCKET, DVC_PREFIX, stack.s3_endpoint())  # fmt: skip
