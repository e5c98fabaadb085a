#!/usr/bin/env bash
# After scripts/ci/retrain.sh on a schedule or a manual run: when retraining changed dvc.lock,
# push the new outputs to the DVC remote first, then commit dvc.lock, params.yaml and reports/
# to BRANCH and open the pull request that adopts them, or update the one already open. Its
# body is the retrain report (the metrics and params diff).
#   scripts/ci/propose.sh REPORT_MD
# Environment: GITHUB_REPOSITORY (owner/name), GH_TOKEN, GITHUB_API_URL (GitHub sets it;
# default https://api.github.com), BRANCH (default retrain/auto), BASE (default main),
# GIT_REMOTE (default origin).
set -euo pipefail
report="${1:?usage: scripts/ci/propose.sh REPORT_MD}"
: "${GITHUB_REPOSITORY:?}" "${GH_TOKEN:?}"
python="${PYTHON:-python}"
api="${GITHUB_API_URL:-https://api.github.com}"
api="${api%/}"
branch="${BRANCH:-retrain/auto}"
base="${BASE:-main}"
remote="${GIT_REMOTE:-origin}"
[[ -s "$report" ]] || { echo "no report at $report: nothing to propose" >&2; exit 1; }

# Against the base commit this run started from (where HEAD and $remote/$base meet), not
# HEAD: a rerun in a checkout that a crash left on the branch (kill point ci.pushed) still
# proposes what it committed there, and a main that moved meanwhile is not undone.
git rev-parse --verify -q "$remote/$base^{commit}" >/dev/null \
  || { echo "no $remote/$base in this checkout: fetch it first" >&2; exit 1; }
fork=$(git merge-base HEAD "$remote/$base")
changed=0
git diff --quiet "$fork" -- dvc.lock || changed=$?
if [[ $changed -eq 0 ]]; then
  echo "dvc.lock unchanged: retraining reproduced $base, nothing to propose"
  exit 0
elif [[ $changed -ne 1 ]]; then
  exit "$changed"  # git's own error is above
fi

# Outputs before the commit that names them: the pull request never points at missing data.
"$python" -m dvc push

git checkout -B "$branch"
git add -- dvc.lock params.yaml reports
git diff --cached --quiet || git commit -qm "Retrain: dvc.lock and reports from $(git rev-parse --short HEAD)"
# The token reaches git for this push only, by environment (never a command line, never
# .git/config: the checkout kept no credentials).
auth=$(printf 'x-access-token:%s' "$GH_TOKEN" | base64 -w0)
GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraheader \
  GIT_CONFIG_VALUE_0="AUTHORIZATION: basic $auth" \
  git push --force "$remote" "HEAD:refs/heads/$branch"
"$python" -m birnn.crash --point ci.pushed

title="Retrained model ($(date -u +%Y-%m-%d))"
# The token goes to curl in a private header file, never as an argument (`ps` reads those).
auth_header=$(mktemp)
trap 'rm -f "$auth_header"' EXIT
printf 'Authorization: Bearer %s\n' "$GH_TOKEN" > "$auth_header"
gh_api() {  # METHOD PATH [JSON]: the GitHub REST API, failing on any HTTP error
  curl -fsS -X "$1" "$api/$2" \
    -H @"$auth_header" -H "Accept: application/vnd.github+json" \
    -H "X-GitHub-Api-Version: 2022-11-28" ${3:+--data "$3"}
}
owner="${GITHUB_REPOSITORY%%/*}"
number=$(gh_api GET "repos/$GITHUB_REPOSITORY/pulls?state=open&head=$owner:$branch&base=$base" \
  | jq -r '.[0].number // empty')
if [[ -n "$number" ]]; then
  payload=$(jq -n --arg title "$title" --rawfile body "$report" '{title: $title, body: $body}')
  gh_api PATCH "repos/$GITHUB_REPOSITORY/pulls/$number" "$payload" >/dev/null
  echo "updated pull request #$number"
else
  payload=$(jq -n --arg title "$title" --rawfile body "$report" --arg head "$branch" \
    --arg base "$base" '{title: $title, body: $body, head: $head, base: $base}')
  number=$(gh_api POST "repos/$GITHUB_REPOSITORY/pulls" "$payload" | jq -r .number)
  echo "opened pull request #$number"
fi
