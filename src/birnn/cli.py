"""The thin shell every stage's ``main()`` shares: logging setup and one-line errors."""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable

import psutil

from birnn.errors import BirnnError

log = logging.getLogger("birnn")


def setup_logging() -> None:
    """Log to stderr with the stage name; ``BIRNN_LOG_LEVEL`` overrides INFO."""
    logging.basicConfig(
        level=os.environ.get("BIRNN_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_stage(name: str, fn: Callable[[], None]) -> None:
    """Run a stage; a :class:`BirnnError` becomes one line on stderr and exit code 1."""
    setup_logging()
    # SIGTERM (dvc exp queue kill, CI cancel) unwinds like Ctrl-C so open runs are closed.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        fn()
        # Whole-process figures (interpreter start and imports included), for the README table.
        wall = time.time() - psutil.Process().create_time()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("stage %s done in %.1f s, peak RSS %.0f MiB", name, wall, peak)
    except BirnnError as exc:
        # One line, no traceback: the message already names the key, file or URL at fault.
        print(f"birnn.{name}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"birnn.{name}: interrupted", file=sys.stderr)
        sys.exit(130)
