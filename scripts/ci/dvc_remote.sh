#!/usr/bin/env bash
# Give CI's checkout the team's DVC remote, all of it from the secrets, in .dvc/config.local:
# the URL (DVC_REMOTE_URL) and the endpoint of an S3-compatible store (DVC_REMOTE_ENDPOINT_URL,
# optional). Nothing is committed: a clone without them has no remote, so `dvc push` can never
# reach a bucket the project does not own. The credentials stay in the environment
# (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), read by DVC.
#   scripts/ci/dvc_remote.sh    prints the remote's name, or "no-remote" (exit 0) when there
#                               are no credentials or no URL
set -euo pipefail
python="${PYTHON:-python}"
if [[ -z "${AWS_ACCESS_KEY_ID:-}" ]]; then
  echo "no-remote"
  exit 0
fi
if [[ -z "${DVC_REMOTE_URL:-}" ]]; then
  echo "::warning::S3 credentials but no DVC_REMOTE_URL secret: no DVC remote" >&2
  echo "no-remote"
  exit 0
fi
"$python" -m dvc remote add --local --force --default team "$DVC_REMOTE_URL" >/dev/null
if [[ -n "${DVC_REMOTE_ENDPOINT_URL:-}" ]]; then
  "$python" -m dvc remote modify --local team endpointurl "$DVC_REMOTE_ENDPOINT_URL"
fi
echo "team"
