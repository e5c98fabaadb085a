"""SeaweedFS (``weed mini``): the S3 endpoint behind MLflow's artifacts and the DVC remote,
every port on 127.0.0.1, telemetry off, one identity with the stack's generated keys.

Its S3 port opens before the filer behind it is ready, so a start waits for the bucket; a
bucket not ready in time is a :class:`StackError` with the last error.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING

from birnn.stack.state import BUCKET, StackError, State, weed_binary, write_private

if TYPE_CHECKING:
    from birnn.stack.core import Stack


def start(stack: Stack, st: State) -> None:
    stack.s3dir.mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "birnn",
                "credentials": [{"accessKey": st.s3_access_key, "secretKey": st.s3_secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    s3_config = stack.root / "s3-identities.json"
    write_private(s3_config, json.dumps(identities))
    p = st.ports
    stack.spawn(
        "s3",
        [
            str(weed_binary()), "mini", f"-dir={stack.s3dir}",
            # Loopback only, no telemetry, no admin UI/WebDAV/Iceberg/Lance listeners, and
            # every other port pinned to this stack's own free ports.
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p.weed_master}", f"-master.port.grpc={p.weed_master_grpc}",
            f"-volume.port={p.weed_volume}", f"-volume.port.grpc={p.weed_volume_grpc}",
            f"-filer.port={p.weed_filer}", f"-filer.port.grpc={p.weed_filer_grpc}",
            f"-admin.port={p.weed_admin}", f"-admin.port.grpc={p.weed_admin_grpc}",
            f"-filer.localSocket={stack.root / 'filer.sock'}",
            f"-s3.localSocket={stack.root / 's3.sock'}",
            f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}",
            f"-s3.config={s3_config}", f"-bucket={BUCKET}",
        ],
        {},
    )  # fmt: skip
    stack.wait("s3", 60)
    wait_bucket(stack)


def client(stack: Stack):
    import boto3

    env = stack.s3_env()
    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint(),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def wait_bucket(stack: Stack, timeout: float = 60) -> None:
    """The S3 port opens before the filer behind it is ready: wait for the bucket."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client(stack)
    deadline = time.monotonic() + timeout
    while True:
        try:
            s3.head_bucket(Bucket=BUCKET)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                with contextlib.suppress(ClientError):
                    s3.create_bucket(Bucket=BUCKET)
            last = str(exc)
        except BotoCoreError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise StackError(f"S3 bucket {BUCKET!r} not ready in {timeout:.0f}s: {last}")
        time.sleep(0.5)
