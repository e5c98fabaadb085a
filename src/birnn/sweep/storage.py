"""Where a study lives: Optuna's RDB storage (a sqlite file under ``.sweep/`` or any SQLAlchemy
URL) with heartbeats, so a trial whose worker died is marked failed and retried once.

A storage that cannot be opened is one :class:`BirnnError` line with the password redacted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from birnn import stage
from birnn.errors import BirnnError, ConfigError
from birnn.sweep.space import SWEEP_DIR, SweepConfig, search_digest

log = logging.getLogger("birnn.sweep")


def storage_url(cfg: SweepConfig, override: str | None, root: Path) -> str:
    url = override or os.environ.get("BIRNN_SWEEP_STORAGE") or cfg.storage
    return url or f"sqlite:///{(root / SWEEP_DIR / 'optuna.db').resolve()}"


def open_storage(url: str, heartbeat_s: int, on_stale: Any = None) -> Any:
    """Optuna's RDB storage with heartbeats; a stale trial is failed and retried once."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        (Path(url.removeprefix("sqlite:///")).parent).mkdir(parents=True, exist_ok=True)
        # Two workers write at once: wait for the other's transaction instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)

    def failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.warning(
            "trial %d lost its worker (no heartbeat): marked failed, retrying it", trial.number
        )
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    try:
        return RDBStorage(
            url,
            heartbeat_interval=heartbeat_s,
            grace_period=3 * heartbeat_s,
            heartbeat_stale_trial_callback=failed,
            **kwargs,
        )
    except Exception as exc:
        line = stage.service_failure(exc) or f"{type(exc).__name__}: {exc}"
        raise BirnnError(f"cannot open the study storage {redact(url)}: {line}") from None


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


@contextlib.contextmanager
def heartbeat(storage: Any, trial_id: int, every_s: int) -> Iterator[threading.Event]:
    """Record the trial's heartbeat every ``every_s`` seconds while the block runs.

    A heartbeat that cannot be recorded (the storage is down or locked) is retried every few
    seconds. After :func:`lost_after` seconds without one, the yielded event is set: other
    workers are about to see the trial as stale and retry it, so its runner must stop it
    rather than let it run twice."""
    stop, lost = threading.Event(), threading.Event()
    limit = lost_after(every_s)

    def beat() -> None:
        last_ok = time.monotonic()
        failing = False
        while not stop.is_set():
            try:
                storage.record_heartbeat(trial_id)
            except Exception as exc:
                if not failing:
                    log.warning("trial heartbeat not recorded (%s); retrying", one_line(exc))
                failing = True
                if time.monotonic() - last_ok >= limit:
                    lost.set()
                    return
                stop.wait(min(every_s, HEARTBEAT_RETRY_S))
                continue
            if failing:
                log.warning("trial heartbeat recorded again")
            failing, last_ok = False, time.monotonic()
            stop.wait(every_s)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()


# A failed heartbeat is retried this often (seconds, at most every heartbeat interval).
HEARTBEAT_RETRY_S = 2


def lost_after(every_s: int) -> float:
    """Seconds without a recorded heartbeat after which a trial stops itself: two intervals,
    inside the three (the storage's grace period) after which other workers retry it."""
    return 2 * every_s


def one_line(exc: BaseException) -> str:
    """The root cause in one line (Optuna wraps a locked or lost database in a generic
    StorageInternalError)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def check_same_search(study: Any, cfg: SweepConfig, config: Path) -> None:
    """A resumed study must search what it was started with: Optuna would keep the stored
    direction and mix trials of two spaces without a word. A study from before this check
    adopts the current search."""
    digest = search_digest(cfg)
    stored = study.user_attrs.get("search_digest")
    if stored is None:
        study.set_user_attr("search_digest", digest)
    elif stored != digest:
        raise ConfigError(
            f"study {cfg.study!r} was started with another objective, fixed values or space "
            f"than {config} now holds: restore the file, or start a new study (study: in "
            f"{config}, or --study NAME)"
        )
