#!/usr/bin/env bash
# The retrain job's logic, shared by .github/workflows/retrain.yml and the tests.
#
#   scripts/ci/retrain.sh BASE_REV
#
# Environment:
#   RETRAIN_SET          params overrides, e.g. "train.epochs=3 model.units=[64, 64]": pairs
#                        separated by spaces outside brackets and quotes (birnn.overrides),
#                        applied with `dvc exp run -S` (the workspace gets the results)
#   REPORT_MD            where the Markdown report goes (default: reports/ci_report.md)
#   ARTIFACT_URL         link to the uploaded figures, shown in the report
#   GITHUB_STEP_SUMMARY  set by GitHub Actions: the report is appended to the job summary
#   BIRNN_DATA_MIRROR    optional dataset mirror (folder or URL) for the download stage
# Exit status: non-zero when the pipeline fails or test accuracy is below
# evaluate.min_test_accuracy (the report is written first, so it can still be posted).
set -euo pipefail

base="${1:?usage: scripts/ci/retrain.sh BASE_REV}"
report="${REPORT_MD:-reports/ci_report.md}"
python="${PYTHON:-python}"

if [[ -n "${RETRAIN_SET:-}" ]]; then
  # KEY=VALUE pairs; a value may hold spaces inside brackets or quotes (model.units=[128, 128],
  # as `birnn sweep` prints it). A bad line stops here, before anything runs.
  pairs_file=$(mktemp)
  trap 'rm -f "$pairs_file"' EXIT
  "$python" -m birnn.overrides "$RETRAIN_SET" > "$pairs_file"
  mapfile -d '' -t pairs < "$pairs_file"
  args=()
  for kv in "${pairs[@]}"; do args+=(-S "$kv"); done
  echo "::group::dvc exp run ${args[*]}"
  "$python" -m dvc exp run "${args[@]}"
else
  echo "::group::dvc repro"
  "$python" -m dvc repro
fi
echo "::endgroup::"

report_args=(--base "$base" --out "$report")
[[ -n "${ARTIFACT_URL:-}" ]] && report_args+=(--artifact-url "$ARTIFACT_URL")
"$python" -m birnn.report "${report_args[@]}"
if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
  cat "$report" >> "$GITHUB_STEP_SUMMARY"
fi
cat "$report"

"$python" -m birnn.report --check
