"""The thin shell every stage's ``main()`` shares: logging setup, one-line errors, SIGTERM as
Ctrl-C, an exit that skips the garbage collector's walk over every object
(:func:`freeze_at_exit`), and the TensorFlow stages' threads per op (:func:`set_op_threads`: a
bad ``TF_NUM_INTRAOP_THREADS`` is a one-line error; called after TensorFlow's first op, it
raises TensorFlow's RuntimeError, a bug)."""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator

import psutil

from birnn.errors import BirnnError, ConfigError

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


# Libraries whose failures are the environment's (a store, a server, the network), not bugs.
SERVICE_LIBRARIES = {
    "mlflow": "MLflow",
    "sqlalchemy": "the MLflow database",
    "sqlite3": "the MLflow database",
    "psycopg2": "the MLflow database",
    "psycopg": "the MLflow database",
    "alembic": "the MLflow database",
    "requests": "an HTTP request",
    "urllib3": "an HTTP request",
    "botocore": "the object store",
    "boto3": "the object store",
}


def service_failure(exc: BaseException) -> str | None:
    """One line for a failure raised by a service library, or None for anything else."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        what = SERVICE_LIBRARIES.get(type(cur).__module__.split(".")[0])
        if what is not None:
            text = str(exc).strip().splitlines()
            first = text[0] if text else type(exc).__name__
            return f"{what} failed ({type(exc).__name__}): {first[:300]}"
        cur = cur.__cause__ or cur.__context__
    return None


@contextlib.contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """Turn a :class:`BirnnError` or a service failure into ``<prog>: error: ...`` and exit 1.

    A bug (any other exception) keeps its traceback.
    """
    try:
        yield
    except BirnnError as exc:
        # One line, no traceback: the message already names the key, file or URL at fault.
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        # A store, server or network failure is one line too.
        line = service_failure(exc)
        if line is None:
            raise
        log.debug("service failure", exc_info=True)
        print(f"{prog}: error: {line}", file=sys.stderr)
        sys.exit(1)


def run_stage(name: str, fn: Callable[[], None]) -> None:
    """Run a stage; a :class:`BirnnError` or a service failure becomes one line on stderr and
    exit code 1 (``BIRNN_LOG_LEVEL=DEBUG`` logs the traceback of the latter). The process's
    exit, whichever way it comes, skips the garbage collector's last walk
    (:func:`freeze_at_exit`)."""
    setup_logging()
    freeze_at_exit()
    # SIGTERM (dvc exp queue kill, CI cancel) unwinds like Ctrl-C so open runs are closed.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with one_line_errors(f"birnn.{name}"):
            fn()
        # Whole-process figures (interpreter start and imports included), for the results table.
        wall = time.time() - psutil.Process().create_time()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("stage %s done in %.1f s, peak RSS %.0f MiB", name, wall, peak)
    except KeyboardInterrupt:
        print(f"birnn.{name}: interrupted", file=sys.stderr)
        sys.exit(130)


def freeze_at_exit() -> None:
    """At this process's exit, spare it the garbage collector's walk over every object.

    At exit Python frees every module, and its collector walks every object TensorFlow, Keras
    and MLflow made: measured ~2 s of CPU per train or evaluate process, after its work (0.2 s
    with this; a small train stage is ~13 s in all). An ``atexit`` handler calls
    ``gc.freeze()``, which moves every object to the permanent generation that no collection
    walks; whatever way the process exits (done, a one-line error, Ctrl-C), the rest of exit is
    Python's own: threads joined, the other ``atexit`` handlers run, streams flushed. What
    changes: garbage in reference cycles is no longer finalized at exit (its ``__del__`` does
    not run), which Python does not promise at exit anyway and nothing here relies on. An
    in-process caller (a test) only freezes at its own exit. Registered once however often
    called.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def default_op_threads() -> int:
    """Half this process's cores, at least one: the threads per op :func:`set_op_threads` picks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // 2)


def set_op_threads() -> None:
    """Give each TensorFlow op half the cores (at least one), unless TF_NUM_INTRAOP_THREADS says.

    The two directions of a bidirectional layer are independent chains of small ops, which
    TensorFlow's inter-op pool runs side by side; an op split over every core makes the two
    chains take turns instead. Measured on 2 cores (docs/performance.md): with one thread per op
    the steady epochs of a probe were ~9% shorter and a full 11-epoch run's ``fit`` 20% shorter
    than with TensorFlow's default, to bitwise the same weights. Half of more cores is the same
    split, not measured. ``TF_NUM_INTRAOP_THREADS`` (TensorFlow reads it itself; the tests set
    it) overrides it: a value that is not a whole number >= 1 is a one-line ConfigError. Must
    run before TensorFlow's first op: TensorFlow raises RuntimeError after.
    """
    raw = os.environ.get("TF_NUM_INTRAOP_THREADS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(
                f"TF_NUM_INTRAOP_THREADS={raw!r}: not a whole number of threads >= 1 "
                "(unset it to let the stage choose)"
            )
        log.info("TensorFlow: %s thread(s) per op (TF_NUM_INTRAOP_THREADS)", raw)
        return
    import tensorflow as tf

    threads = default_op_threads()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    log.info("TensorFlow: %d thread(s) per op", threads)
