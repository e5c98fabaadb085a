#!/usr/bin/env bash
# Print the revision the retrain report compares against, from GitHub's event variables:
#   pull_request         origin/$BASE_REF (the PR's target branch)
#   push                 $BEFORE, the branch tip before this push (all its commits count),
#                        or HEAD~1 when there is none (a new branch: BEFORE is all zeros)
#   schedule, dispatch   origin/main
# Environment: EVENT, BASE_REF, BEFORE (github.event_name, .base_ref, .event.before).
set -euo pipefail
case "${EVENT:-}" in
  pull_request) echo "origin/${BASE_REF:?BASE_REF is empty on a pull_request event}" ;;
  push)
    if [[ -n "${BEFORE:-}" && ! "$BEFORE" =~ ^0+$ ]] && git cat-file -e "${BEFORE}^{commit}" 2>/dev/null; then
      echo "$BEFORE"
    else
      echo "HEAD~1"
    fi
    ;;
  *) echo "origin/main" ;;
esac
