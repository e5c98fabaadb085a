"""The served model, and the thread that follows an alias in the registry.

Promises: :attr:`Follower.current` is always one whole :class:`Served` (a model loaded and
warmed up, with what it is); a request reads it once and finishes on that model, so a swap never
fails or mixes a request. A new version is loaded beside the old one and swapped in by one
attribute assignment, only once it has answered a warm-up prediction. A registry that cannot be
reached keeps the current model serving: one warning when lookups start failing, one line when
they work again. A version that cannot be loaded is skipped with one warning, and not fetched
again while the alias stays on it.

Fails: the first load (nothing to serve yet) raises :class:`~birnn.errors.TrackingError`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from birnn.errors import TrackingError

log = logging.getLogger(__name__)

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
SCORES = ("test_accuracy", "macro_f1", "test_loss")


@dataclass(frozen=True)
class Served:
    """A loaded model and what it is (what ``GET /model`` shows)."""

    model: Any  # mlflow.pyfunc.PyFuncModel
    uri: str  # what was loaded: models:/NAME/VERSION, or the URI as given
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    since: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def describe(self) -> dict[str, Any]:
        return {
            "registered_model": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "model_uri": self.uri,
            "metrics": self.scores,
            "since": self.since,
        }

    def labels(self) -> dict[str, str]:
        """What the metrics' model-info series is labelled with ("" for what it lacks)."""
        d = self.describe()
        return {k: d[k] or "" for k in ("registered_model", "version", "alias", "run_id")}

    @property
    def label(self) -> str:
        """The model version as a metrics label: the version, else the URI."""
        return self.version or self.uri


def load(uri: str, version: Any | None = None, alias: str | None = None) -> Served:
    """Load ``uri`` (a registry version's own URI when ``version`` is given) and warm it up."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrackingError(f"cannot load model {uri}: {first}") from None
    # One prediction before it serves: the first request must not pay graph tracing.
    model.predict(np.zeros((1, 28, 28), dtype=np.float32))
    if version is None:
        return Served(model, uri)
    scores = {}
    for key in SCORES:
        with contextlib.suppress(KeyError, ValueError):
            scores[key] = float(version.tags[key])
    return Served(
        model, uri, version.name, str(version.version), alias, version.run_id or None, scores
    )


class Follower:
    """Serves ``uri``; for ``models:/NAME@ALIAS``, polls the alias and swaps in its new target.

    ``client`` is a function returning an MlflowClient (a new one per poll: it may have failed).
    """

    def __init__(self, uri: str, client: Callable[[], Any], poll_interval: float = 30.0) -> None:
        self.uri = uri
        self._client = client
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._unloadable: str | None = None
        self.swaps = 0
        self.poll_errors = 0
        # Called after a swap (old, new) and after a failed lookup: the server's metrics.
        self.on_swap: Callable[[Served, Served], None] | None = None
        self.on_poll_error: Callable[[], None] | None = None
        match = ALIAS_URI.match(uri)
        self.name, self.alias = (match["name"], match["alias"]) if match else (None, None)
        self.current = self._first()

    @property
    def follows(self) -> bool:
        return self.alias is not None

    def _first(self) -> Served:
        if self.alias is not None:
            version = self._resolve()
            return load(f"models:/{self.name}/{version.version}", version, self.alias)
        fixed = VERSION_URI.match(self.uri)
        if fixed:
            version = self._client().get_model_version(fixed["name"], fixed["version"])
            return load(self.uri, version)
        return load(self.uri)

    def _resolve(self) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self._client().get_model_version_by_alias(self.name, self.alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise TrackingError(
                    f"{self.name} has no version with alias {self.alias!r} (for the champion: "
                    "run `birnn promote`), or name a model with --model"
                ) from None
            raise

    def poll_once(self) -> bool:
        """Look the alias up; load and swap in a new target. True if it swapped."""
        if self.alias is None:
            return False
        try:
            version = self._resolve()
        except Exception as exc:  # the registry's outage is not the server's
            self.poll_errors += 1
            if self.on_poll_error is not None:
                self.on_poll_error()
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot look %s@%s up (%s); still serving version %s",
                    self.name,
                    self.alias,
                    _first_line(exc),
                    self.current.version,
                )
            return False
        if self._failing:
            self._failing = False
            log.info(
                "the registry answers again: %s@%s is version %s",
                self.name,
                self.alias,
                version.version,
            )
        if str(version.version) == self.current.version:
            self._unloadable = None  # the alias moved back: a later move may be tried again
            return False
        if str(version.version) == self._unloadable:
            return False  # the version that would not load: tried once, warned once
        started = time.monotonic()
        try:
            new = load(f"models:/{self.name}/{version.version}", version, self.alias)
        except Exception as exc:
            self._unloadable = str(version.version)
            log.warning(
                "cannot load %s version %s (%s); still serving version %s",
                self.name,
                version.version,
                _first_line(exc),
                self.current.version,
            )
            return False
        old, self.current = self.current, new  # the swap: one assignment
        self._unloadable = None
        self.swaps += 1
        log.info(
            "%s@%s moved: now serving version %s (was %s; loaded in %.1f s)",
            self.name,
            self.alias,
            new.version,
            old.version,
            time.monotonic() - started,
        )
        if self.on_swap is not None:
            self.on_swap(old, new)
        return True

    def start(self) -> None:
        """Poll in a daemon thread every ``poll_interval`` seconds (only for an alias URI)."""
        if self.alias is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="birnn-follow", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.poll_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0][:200] if lines else "") or type(exc).__name__
