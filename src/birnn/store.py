"""The embedded MLflow store (``sqlite``): created once, repaired when a migration was cut
short, and written to with retries while another process holds the database lock.

- MLflow creates and migrates a new sqlite store on first use, with no lock between processes:
  two runs starting on a fresh project (``dvc queue start -j 2``) race through the migration
  and leave a half-migrated file (``table _alembic_tmp_tags already exists``) that every later
  run trips over. Here the first use happens under a file lock beside the database
  (``mlflow.db.lock``), so one process migrates and the others wait.
- A store that an interrupted or raced migration left behind (an ``_alembic_tmp_*`` table) is
  repaired under the same lock, after a backup copy: with no runs or models in it, it is set
  aside and created anew; otherwise the unfinished copies are dropped (or, if the original was
  already dropped, renamed back) and the migration runs again. If that fails, the backup is
  put back and the stage stops with one line naming the file. Nothing is ever deleted.
- A process that migrates without that lock (``mlflow ui``, ``mlflow server``, any tool on the
  file) leaves ``_alembic_tmp_*`` tables while it works: they are its work in progress, not a
  leftover. While another process has the file open and such tables are there, nothing is
  repaired: :func:`leftovers_once_alone` waits up to :data:`HOLDER_WAIT_S` for its migration to
  finish, then stops with one line naming that process.
- sqlite's busy timeout does not cover every case with two writers (a reader upgrading to a
  writer gets "database is locked" at once), so :func:`retrying` repeats a call that failed
  that way, for up to :data:`LOCK_WAIT_S` seconds.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
from filelock import FileLock

from birnn.errors import TrackingError

log = logging.getLogger(__name__)

TMP_PREFIX = "_alembic_tmp_"
LOCK_WAIT_S = 120.0
# How long a store's temp tables may stay while another process has it open (its migration
# runs) before the stage gives up instead of repairing under it.
HOLDER_WAIT_S = 30.0
T = TypeVar("T")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores or in-memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def init_lock(db: Path) -> Iterator[None]:
    """Hold ``<db>.lock`` while the store is created, migrated, repaired or given experiments."""
    db.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{db}.lock", timeout=600)
    with lock:
        yield


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {r[0] for r in rows}


def _count(conn: sqlite3.Connection, table: str, tables: set[str]) -> int:
    if table not in tables:
        return 0
    return int(conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])


def leftover_tables(db: Path) -> list[str]:
    """``_alembic_tmp_*`` tables: the trace of a migration that did not finish."""
    if not db.is_file() or db.stat().st_size == 0:
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return sorted(t for t in _tables(conn) if t.startswith(TMP_PREFIX))
    except sqlite3.DatabaseError:
        return []  # not a database at all: MLflow's own error says so, one line


def holders(db: Path) -> list[psutil.Process]:
    """The other processes that have ``db`` open (a server, a UI, another stage): those this
    user may inspect (every process for root; a non-root user's view misses other users')."""
    target = os.path.realpath(db)
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if any(os.path.realpath(f.path) == target for f in proc.open_files()):
                found.append(proc)
    return found


def leftovers_once_alone(db: Path, wait_s: float | None = None) -> list[str]:
    """The store's ``_alembic_tmp_*`` tables once no other process could be making them: none
    if a running migration finishes meanwhile. Another process that keeps the file open with
    the tables still there after ``wait_s`` (default :data:`HOLDER_WAIT_S`) is one line."""
    deadline = time.monotonic() + (HOLDER_WAIT_S if wait_s is None else wait_s)
    while True:
        leftovers = leftover_tables(db)
        others = holders(db) if leftovers else []
        if not others:
            # Looked again: a migration that finished (dropped its tables and closed the file)
            # between the two looks left nothing to repair.
            return leftover_tables(db) if leftovers else []
        if time.monotonic() >= deadline:
            who = f"pid {others[0].pid}"
            with contextlib.suppress(psutil.Error):
                who += f" ({' '.join(' '.join(others[0].cmdline()).split())[:120]})"
            raise TrackingError(
                f"MLflow store {db} is half-migrated ({', '.join(leftovers)}) and {who} has "
                "it open, perhaps migrating it now: not repaired under it; let it finish or "
                "stop it, then rerun"
            )
        time.sleep(0.5)


# Tables whose rows are someone's records (the default experiment, id 0, is MLflow's own).
RECORD_TABLES = ("runs", "registered_models", "model_versions", "logged_models")


def _holds_records(conn: sqlite3.Connection, tables: set[str]) -> bool:
    """Whether the store holds anything of anyone's: runs, registered models, versions, logged
    models or an experiment beyond the default, in a table or in the copy a cut-short batch
    migration left of it."""

    def rows(table: str) -> int:
        return max(_count(conn, table, tables), _count(conn, f"{TMP_PREFIX}{table}", tables))

    return any(rows(t) > 0 for t in RECORD_TABLES) or rows("experiments") > 1


def repair(db: Path, migrate: Callable[[], None]) -> None:
    """Mend a store left half-migrated, then run ``migrate`` (opening it with MLflow).

    Call under :func:`init_lock`. A backup copy is taken first, when there is anything to mend,
    and put back if anything fails; a store mended meanwhile is only opened.
    """
    if not leftover_tables(db):  # mended meanwhile: nothing to repair, nothing to back up
        migrate()
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = db.with_name(f"{db.name}.before-repair-{stamp}")
    shutil.copy2(db, backup)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = _tables(conn)
        leftovers = sorted(t for t in tables if t.startswith(TMP_PREFIX))
        if not _holds_records(conn, tables):
            conn.close()
            aside = db.with_name(f"{db.name}.broken-{stamp}")
            db.rename(aside)
            backup.unlink()
            log.warning(
                "MLflow store %s was left half-migrated by an interrupted or concurrent first "
                "use (%s) and holds no runs or models: set it aside as %s and created it anew",
                db, ", ".join(leftovers), aside.name,
            )  # fmt: skip
            migrate()
            return
        done = []
        for tmp in leftovers:
            original = tmp[len(TMP_PREFIX) :]
            if original not in tables:
                # Batch migrations copy into the temp table before dropping the original: the
                # copy is whole, only its rename was missed.
                conn.execute(f'ALTER TABLE "{tmp}" RENAME TO "{original}"')
                done.append(f"renamed {tmp} to {original}")
            elif _count(conn, tmp, tables) <= _count(conn, original, tables):
                conn.execute(f'DROP TABLE "{tmp}"')
                done.append(f"dropped the unfinished copy {tmp}")
            else:
                _restore(db, backup)
                raise TrackingError(
                    f"MLflow store {db} was left half-migrated and {tmp} holds rows that "
                    f"{original} lacks: not repaired automatically; the file is unchanged. "
                    f"Restore it from a backup, or run `mlflow db upgrade sqlite:///{db}` "
                    "after checking both tables"
                )
        conn.commit()
    try:
        migrate()
    except Exception as exc:
        _restore(db, backup)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrackingError(
            f"MLflow store {db} was left half-migrated and could not be repaired ({first}); "
            f"the file is unchanged. Restore it from a backup or run "
            f"`mlflow db upgrade sqlite:///{db}`"
        ) from None
    log.warning(
        "repaired MLflow store %s after an interrupted migration (%s); a copy of the store "
        "as it was is kept in %s",
        db, "; ".join(done), backup.name,
    )  # fmt: skip


def _restore(db: Path, backup: Path) -> None:
    shutil.copy2(backup, db)


def is_locked_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is sqlite's "database is locked"."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if "database is locked" in str(cur) or "database table is locked" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def retrying(fn: Callable[..., T]) -> Callable[..., T]:
    """Repeat ``fn`` while it fails with "database is locked", for up to ``LOCK_WAIT_S``.

    Such a failure rolled its transaction back, so repeating the call cannot write twice.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.05
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not is_locked_error(exc) or time.monotonic() > deadline:
                    raise
                log.debug("database is locked: retrying %s in %.2f s", fn.__name__, delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    return wrapper


CONFLICT_TRIES = 3


def upsert(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Make a write that two processes may make at once (a tag, an alias, a dataset's row):
    the loser of the insert race gets a constraint error (MLflow's ``BAD_REQUEST``, HTTP 400);
    made again, the row exists and the write is an update or a link."""
    from mlflow.exceptions import MlflowException

    for attempt in range(CONFLICT_TRIES - 1):
        try:
            return call(*args, **kwargs)
        except MlflowException as exc:
            if exc.error_code != "BAD_REQUEST":
                raise
            log.info("a concurrent insert won the race: making %s again", call)
            time.sleep(0.2 * (attempt + 1))
    return call(*args, **kwargs)


class Retrying:
    """A proxy whose callables are :func:`retrying`: ``Retrying(MlflowClient()).get_run(...)``,
    ``Retrying(mlflow).set_tags(...)``. Each wrapped call is one store operation, so a retry
    never repeats a write that went through."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        return retrying(attr) if callable(attr) else attr
