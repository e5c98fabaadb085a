"""The team stack on 127.0.0.1: PostgreSQL (MLflow's backend store), SeaweedFS (an S3 endpoint
for MLflow's artifacts and the DVC remote) and ``mlflow server`` in front of both.

    birnn stack up [--dir .stack]     start whatever is not running; write stack.env
    birnn stack status                each service: pid, port, answering or not
    birnn stack down                  stop each service by its pid
    birnn stack dvc-remote [--repo .] point a clone's DVC remote at the stack

All state lives in one folder (default ``.stack/``, git-ignored): ``stack.json`` (ports,
generated credentials, pids), ``stack.env`` (what a clone sources), the PostgreSQL cluster, the
object store's volumes and one log per service. Ports are picked free on the first ``up`` and
kept, so a restarted stack answers where its clients already point.

Clients need only ``MLFLOW_TRACKING_URI``: the server proxies artifacts to S3, so only the
server and DVC hold S3 credentials.

The package: :mod:`~birnn.stack.state` (ports, credentials, binaries), one module per service
(:mod:`~birnn.stack.postgres`, :mod:`~birnn.stack.s3`, :mod:`~birnn.stack.mlflow_server`),
:mod:`~birnn.stack.core` (the :class:`Stack` that starts, checks and stops them) and
:mod:`~birnn.stack.cli`. What tests, benchmarks and the sweep use is re-exported here.
"""

from birnn.stack.core import Stack
from birnn.stack.state import (
    NO_TELEMETRY,
    Ports,
    StackError,
    State,
    free_port,
    missing_binaries,
    missing_packages,
)

__all__ = [
    "NO_TELEMETRY",
    "Ports",
    "Stack",
    "StackError",
    "State",
    "free_port",
    "missing_binaries",
    "missing_packages",
]
