"""``mlflow server`` in front of the stack's PostgreSQL (backend store) and S3 (artifacts,
proxied: clients need only ``MLFLOW_TRACKING_URI``), on 127.0.0.1 with two workers.

A server that does not answer ``/health`` in time is a :class:`StackError` with its log's last
line.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from birnn.stack.state import BUCKET, MLFLOW_PREFIX, SERVER_ENV, State

if TYPE_CHECKING:
    from birnn.stack.core import Stack


def start(stack: Stack, st: State) -> None:
    stack.spawn(
        "mlflow",
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(st.ports.mlflow), "--workers", "2",
            "--artifacts-destination", f"s3://{BUCKET}/{MLFLOW_PREFIX}",
        ],
        # The backend URI holds PostgreSQL's password: by environment, not on the command line.
        {**stack.s3_env(), **SERVER_ENV, "MLFLOW_BACKEND_STORE_URI": stack.backend_uri()},
    )  # fmt: skip
    stack.wait("mlflow", 120)
