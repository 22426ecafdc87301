#!/usr/bin/env bash
# The pull-request check: plan the head commit against the base branch on a scratch database
# and write the Markdown comment. Exit 0 (no changes) and 2 (changes) both pass the check;
# 1 (an invalid commit or a failing Rego unit test) fails it.
# Usage: pr-plan.sh BASE [HEAD] [OUT]   (run from the root of the fleet repository)
# With ARM_EVIDENCE=runs.json (the evaluation runs production recorded, as GET /v1/evaluations
# answers a ci token) the scratch database starts with them, so the gates judge real evidence.
# With ARM_STATE=state.json ('armctl state export' in production) it starts with production's
# approvals, runs and lifecycles: the waiting gates and approval ids are the real ones. With
# ARM_DECISIONS=decisions.jsonl.gz ('armctl events export --since 7d') the recorded decisions are
# replayed against the head and their flips join the comment's "Decision impact".
set -uo pipefail
base="${1:?usage: pr-plan.sh BASE [HEAD] [OUT]}"
head="${2:-HEAD}"
out="${3:-plan.md}"
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
evidence=()
if [ -n "${ARM_EVIDENCE:-}" ]; then evidence=(--evidence "$ARM_EVIDENCE"); fi
if [ -n "${ARM_STATE:-}" ]; then evidence+=(--state "$ARM_STATE"); fi
if [ -n "${ARM_DECISIONS:-}" ]; then evidence+=(--replay "$ARM_DECISIONS"); fi
armctl plan --repo . --base "$base" --head "$head" --path "${ARM_PATH:-fleet}" "${evidence[@]}" --format markdown >"$out" 2>"$errors"
code=$?
if [ "$code" -eq 1 ]; then
  { echo "### ARM plan failed"; echo; echo '```'; cat "$errors"; echo '```'; } >>"$out"
fi
cat "$out"
[ "$code" -ne 1 ]
