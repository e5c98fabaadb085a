#!/usr/bin/env bash
# Post the report as a pull-request comment, or update the one posted before, so each PR
# carries a single, current report. Only the bot's own comment is ever edited: one that starts
# with the marker *and* was written by BOT_LOGIN (default github-actions[bot]); anybody can
# paste the marker into a comment of their own.
#   scripts/ci/pr_comment.sh REPORT_MD     (needs GH_TOKEN, PR_NUMBER, GITHUB_REPOSITORY)
set -euo pipefail
report="${1:?usage: pr_comment.sh REPORT_MD}"
: "${PR_NUMBER:?}" "${GITHUB_REPOSITORY:?}"
[[ -s "$report" ]] || { echo "no report at $report: nothing to post" >&2; exit 1; }

marker='<!-- birnn-report -->'
bot="${BOT_LOGIN:-github-actions[bot]}"
id=$(gh api "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" --paginate \
  --jq ".[] | select(.user.login == \"$bot\" and .user.type == \"Bot\") | select(.body | startswith(\"$marker\")) | .id" \
  | head -n 1)
if [[ -n "$id" ]]; then
  gh api -X PATCH "repos/$GITHUB_REPOSITORY/issues/comments/$id" -F "body=@$report" >/dev/null
  echo "updated comment $id"
else
  gh api -X POST "repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments" -F "body=@$report" >/dev/null
  echo "posted a new comment"
fi
