#!/usr/bin/env bash
# Fail unless every output the committed dvc.lock (and any .dvc file) names is on the DVC
# remote, so anyone can `dvc pull` what main says it has. Run on pushes to main.
#   scripts/ci/check_remote.sh          (the remote and its credentials already configured)
# With no local cache `dvc status --cloud` calls an output on the remote "deleted"; one it
# calls "missing" (nowhere) or "new" (only in this cache) is not on the remote.
set -euo pipefail
python="${PYTHON:-python}"

if ! json=$("$python" -m dvc status --cloud --json); then
  echo "::error::could not compare with the DVC remote (its error is above)" >&2
  exit 1
fi
missing=$(jq -r 'to_entries[] | select(.value == "missing" or .value == "new") | .key' <<<"$json")
if [[ -n "$missing" ]]; then
  list=$(paste -sd ' ' <<<"$missing")
  echo "::error::not on the DVC remote: $list; run \`dvc push\` where they were produced, then push again" >&2
  exit 1
fi
echo "every output dvc.lock names is on the DVC remote"
