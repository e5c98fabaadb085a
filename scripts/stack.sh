#!/usr/bin/env bash
# The team stack on 127.0.0.1 (PostgreSQL + SeaweedFS S3 + mlflow server), state in .stack/:
#   scripts/stack.sh up | status | down | dvc-remote     (an alias of `birnn stack`; -h for options)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m birnn.stack "$@"
