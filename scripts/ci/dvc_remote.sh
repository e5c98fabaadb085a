#!/usr/bin/env bash
# Give CI's checkout the team's DVC remote: the URL is committed in .dvc/config; the endpoint
# of an S3-compatible store (optional) and a URL override go to .dvc/config.local. The
# credentials stay in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), read by DVC.
#   scripts/ci/dvc_remote.sh    exits 0 and prints "no-remote" when there are no credentials
# Environment: DVC_REMOTE_URL, DVC_REMOTE_ENDPOINT_URL, AWS_ACCESS_KEY_ID.
set -euo pipefail
python="${PYTHON:-python}"
if [[ -z "${AWS_ACCESS_KEY_ID:-}" ]]; then
  echo "no-remote"
  exit 0
fi
remote=$("$python" -m dvc config core.remote)
if [[ -n "${DVC_REMOTE_URL:-}" ]]; then
  "$python" -m dvc remote modify --local "$remote" url "$DVC_REMOTE_URL"
fi
if [[ -n "${DVC_REMOTE_ENDPOINT_URL:-}" ]]; then
  "$python" -m dvc remote modify --local "$remote" endpointurl "$DVC_REMOTE_ENDPOINT_URL"
fi
echo "$remote"
