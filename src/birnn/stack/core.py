"""One stack's state folder and the three services it runs, started in dependency order
(PostgreSQL, S3, MLflow), each in its own process group, each stopped by the pid it was started
with. The services themselves are :mod:`birnn.stack.postgres`, :mod:`birnn.stack.s3` and
:mod:`birnn.stack.mlflow_server`; this module only starts, checks and stops them.

A service that exits while starting or does not answer in time is a :class:`StackError` with
the last line of its log. Each service's environment carries :data:`MARKER_ENV` (this stack's
folder and the service's name): an ``up`` killed after starting a process and before recording
its pid (kill point ``stack.spawned``) leaves a process no state names, which the next ``up``
or ``down`` finds by that marker, never by name or port, and stops. A new stack whose start
fails (a port taken between being picked and being bound) starts again on new ports, twice at
most; so does one whose first ``up`` failed or was killed (not yet ``up_once``). (About 390
lines: one class, as the service table needs it.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path

import psutil

from birnn import crash
from birnn.stack import mlflow_server, postgres, s3
from birnn.stack.state import (
    BUCKET,
    DVC_PREFIX,
    DVC_REMOTE,
    NO_TELEMETRY,
    SERVICES,
    Ports,
    StackError,
    State,
    missing_binaries,
    missing_packages,
    write_private,
)

log = logging.getLogger("birnn.stack")

# In every service's environment: "<stack folder>:<service>" (see orphans()).
MARKER_ENV = "BIRNN_STACK_SERVICE"
# What each service's command holds: how a state without start times tells its processes.
LEGACY_MARKERS = {"postgres": "postgres", "s3": "weed", "mlflow": "mlflow"}


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (``/proc/<pid>/stat``, field 22):
    fixed for its life, unlike a wall-clock start time that follows clock changes."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return int(text.rsplit(")", 1)[1].split()[19])


# How each service starts: service -> start(stack, state).
STARTS = {"postgres": postgres.start, "s3": s3.start, "mlflow": mlflow_server.start}


class Stack:
    """One stack's state folder and the three services it runs."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.state_file = self.root / "stack.json"
        self.env_file = self.root / "stack.env"
        self.logs = self.root / "logs"
        self.pgdata = self.root / "postgres"
        self.s3dir = self.root / "s3"

    def load(self) -> State | None:
        if not self.state_file.is_file():
            return None
        try:
            return State.from_dict(json.loads(self.state_file.read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            raise StackError(f"{self.state_file} is not a stack state file ({exc})") from exc

    def save(self, state: State) -> None:
        write_private(self.state_file, json.dumps(asdict(state), indent=2) + "\n")

    def state(self) -> State:
        state = self.load()
        if state is None:
            raise StackError(f"no stack in {self.root}: run `python -m birnn.stack up` first")
        return state

    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.state().ports.mlflow}"

    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.state().ports.s3}"

    def backend_uri(self, database: str = "mlflow") -> str:
        """SQLAlchemy URL of one of the stack's databases: ``mlflow`` (MLflow's backend
        store) or ``optuna`` (the storage sweeps share: ``birnn sweep --storage``)."""
        st = self.state()
        return (
            f"postgresql+psycopg2://birnn:{st.pg_password}@127.0.0.1:{st.ports.postgres}/{database}"
        )

    def s3_env(self) -> dict[str, str]:
        """What an S3 client (boto3, the MLflow server, DVC) needs to reach the store."""
        st = self.state()
        return {
            "AWS_ACCESS_KEY_ID": st.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": st.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint(),
        }

    def pid(self, service: str) -> int | None:
        """The service's pid if that process is alive (not a zombie) and is the one this stack
        started: same start (kernel clock ticks since boot, which no clock change moves). After
        a crash or a reboot the recorded number may belong to any other process; that one is
        never taken for ours, so never signalled. A state from before start times were kept is
        trusted only when the process's command is the service's."""
        st = self.load()
        pid = st.pids.get(service) if st else None
        if not pid:
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if service not in st.starts:
                return pid if LEGACY_MARKERS[service] in " ".join(proc.cmdline()) else None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return pid if start_ticks(pid) == st.starts[service] else None

    def answers(self, service: str) -> bool:
        """Whether the service answers on its port: the health check ``status`` reports."""
        st = self.load()
        if st is None or self.pid(service) is None:
            return False
        if service == "postgres":
            return postgres.ready(self, st)
        if service == "s3":
            return self._http_ok(f"http://127.0.0.1:{st.ports.s3}/", any_status=True)
        return self._http_ok(f"http://127.0.0.1:{st.ports.mlflow}/health")

    @staticmethod
    def _http_ok(url: str, any_status: bool = False) -> bool:
        import requests

        try:
            resp = requests.get(url, timeout=2)
        except requests.RequestException:
            return False
        return any_status or resp.ok

    def spawn(self, service: str, cmd: list[str], env: dict[str, str], **kw) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{service}.log").open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **NO_TELEMETRY, **env, MARKER_ENV: self._marker(service)},
                start_new_session=True,  # its own process group: stopped with its workers
                **kw,
            )
        crash.point("stack.spawned")
        st = self.state()
        st.pids[service] = proc.pid
        st.starts[service] = start_ticks(proc.pid)
        self.save(st)
        return proc.pid

    def wait(self, service: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers(service):
            if self.pid(service) is None:
                raise StackError(f"{service} exited while starting: {self.log_tail(service)}")
            if time.monotonic() > deadline:
                raise StackError(
                    f"{service} did not answer within {timeout:.0f}s: {self.log_tail(service)}"
                )
            time.sleep(0.3)

    def log_tail(self, service: str) -> str:
        path = self.logs / f"{service}.log"
        lines = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
        return lines[-1][:300] if lines else f"(no log at {path})"

    def _marker(self, service: str) -> str:
        return f"{self.root}:{service}"

    def marked_groups(self, service: str) -> set[int]:
        """Process groups with a live (not zombie) process that carries this stack's marker
        for ``service``: the service's own processes, never another's."""
        groups = set()
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if (proc.environ().get(MARKER_ENV) == self._marker(service)
                        and proc.status() != psutil.STATUS_ZOMBIE):  # fmt: skip
                    groups.add(os.getpgid(proc.pid))
        return groups

    def orphans(self, service: str) -> list[int]:
        """Process groups of this stack's ``service`` that the state does not record (an
        ``up`` killed between starting them and saving their pid): the leaders of the groups
        whose processes carry this stack's marker for the service."""
        recorded = self.pid(service)
        return sorted(g for g in self.marked_groups(service) if g != recorded)

    def stop_orphans(self, service: str, timeout: float = 30.0) -> bool:
        """Stop what :meth:`orphans` finds (SIGTERM to each group, SIGKILL to what is left
        after ``timeout``); True if there was any. The groups are looked up again before
        each signal, so a group that ended meanwhile (and whose number another took) is
        never signalled."""
        found = self.orphans(service)
        for group in found:
            log.warning("stopping %s (process group %d): started by an interrupted `up`, "
                        "its pid never recorded", service, group)  # fmt: skip
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            for group in self.orphans(service):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, sig)
            deadline = time.monotonic() + wait
            # No reaping: an orphan's parent was the `up` that died, never this process.
            while (left := self.orphans(service)) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not left:
                break
        return bool(found)

    def stop(self, service: str, timeout: float = 30.0) -> bool:
        """Stop one service by its pid (its whole process group), and any unrecorded process
        of it (:meth:`orphans`); True if it was running."""
        stray = self.stop_orphans(service, timeout)
        pid = self.pid(service)
        if pid is None:
            return stray
        with contextlib.suppress(ProcessLookupError):
            if service == "postgres":
                # "Fast" shutdown is SIGINT to the postmaster alone; it stops its backends.
                os.kill(pid, signal.SIGINT)
            else:
                os.killpg(pid, signal.SIGTERM)

        # The leader can end before the rest of its group (mlflow server's uvicorn workers,
        # which may still hold the port): wait for every process of the group that carries
        # the service's marker.
        def running() -> bool:
            return self.pid(service) is not None or pid in self.marked_groups(service)

        deadline = time.monotonic() + timeout
        while running() and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _reap(pid)
        # Forget the pid, so a later process that gets the same number is not taken for it.
        st = self.state()
        st.pids.pop(service, None)
        st.starts.pop(service, None)
        self.save(st)
        return True

    def start(self, service: str) -> bool:
        """Start one service unless it is already running; True if it was started."""
        if self.pid(service) is not None:
            return False
        self.stop_orphans(service)  # it holds the port and, for PostgreSQL, the data folder
        st = self.state()
        STARTS[service](self, st)
        return True

    def up(self, mlflow_port: int | None = None) -> dict[str, float]:
        """Start what is not running (in dependency order); seconds each start took."""
        missing = missing_binaries() + missing_packages()
        if missing:
            raise StackError("cannot start the stack, missing: " + "; ".join(missing))
        self.root.mkdir(parents=True, exist_ok=True)
        state = self.load()
        fresh = state is None
        if fresh:
            state = State.new(mlflow_port)
            self.save(state)
        # Users point at a stack's ports once a whole `up` has finished (`up_once`; a state
        # written before that flag existed: its stack.env); until then (a new stack, or one
        # whose first `up` failed or was killed) they may still move.
        movable = fresh or not (state.up_once or self.env_file.is_file())
        for attempt in range(1, 4):
            try:
                timings = {}
                for service in SERVICES:
                    t0 = time.monotonic()
                    if self.start(service):
                        timings[service] = time.monotonic() - t0
                break
            except StackError as e:
                # A new stack's ports were free when picked, not necessarily when bound (another
                # stack starting at that moment, any process's outgoing connection): stop what
                # started and pick again. A stack already up once keeps its ports: its users
                # point at them.
                if not movable or attempt == 3:
                    raise
                log.warning("stack start failed (%s); again on new ports", e)
                self.down()
                self.save(replace(self.state(), ports=Ports.pick(mlflow_port)))
        state = self.state()  # re-read: each start saved its pid
        if not state.up_once:
            self.save(replace(state, up_once=True))
        self.write_env()
        return timings

    def down(self) -> list[str]:
        """Stop every service (MLflow first, PostgreSQL last); the names that were running."""
        if self.load() is None:
            return []
        return [s for s in reversed(SERVICES) if self.stop(s)]

    def status(self) -> dict[str, dict]:
        st = self.load()
        out = {}
        for service in SERVICES:
            out[service] = {
                "pid": self.pid(service),
                "port": getattr(st.ports, service) if st else None,
                "answers": self.answers(service),
            }
        return out

    def write_env(self) -> Path:
        """``stack.env``: what a clone sources to log to this stack."""
        text = (
            "# Source this to log to the team stack:  . .stack/stack.env\n"
            f"export MLFLOW_TRACKING_URI={self.mlflow_uri()}\n"
            "# Sweeps (birnn sweep) share their Optuna study in the stack's PostgreSQL:\n"
            f"export BIRNN_SWEEP_STORAGE={self.backend_uri('optuna')}\n"
            + "".join(f"export {k}={v}\n" for k, v in NO_TELEMETRY.items())
        )
        write_private(self.env_file, text)
        return self.env_file

    def configure_dvc_remote(self, repo: Path, default: bool = True) -> None:
        """The DVC remote ``team`` on this stack's S3, all of it in ``.dvc/config.local``
        (git-ignored, mode 0600 from its creation): URL, endpoint and credentials. Nothing is
        committed, so a clone without the stack has no remote and ``dvc push`` says how to
        set one, instead of reaching a public bucket of the same name. Written in this process
        with DVC's own config API: the secret key is never on a command line."""
        from dvc.config import Config, ConfigError

        st = self.state()
        local = repo / ".dvc" / "config.local"
        if not local.parent.is_dir():
            raise StackError(f"{repo} is not a DVC project (no .dvc/): run `dvc init` there")
        # DVC rewrites config.local in place, so a file made private first stays private.
        os.close(os.open(local, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(local, 0o600)
        try:
            # Not validated on the way in: a config.local from before (a `team` remote with no
            # url, which the shared config used to hold) is what this rewrites whole.
            with Config(dvc_dir=str(repo / ".dvc"), validate=False).edit(
                "local", validate=False
            ) as conf:
                conf["remote"][DVC_REMOTE] = {
                    "url": f"s3://{BUCKET}/{DVC_PREFIX}",
                    "endpointurl": self.s3_endpoint(),
                    "access_key_id": st.s3_access_key,
                    "secret_access_key": st.s3_secret_key,
                }
                if default:
                    conf["core"]["remote"] = DVC_REMOTE
            Config(dvc_dir=str(repo / ".dvc"))  # the result, validated
        except ConfigError as exc:
            raise StackError(f"DVC config of {repo}: {exc}") from None

    def s3_client(self):
        return s3.client(self)


def _reap(pid: int) -> None:
    """Collect an exited child of ours, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
