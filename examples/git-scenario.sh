#!/usr/bin/env bash
# What the Git scenarios share (promote-by-pr/promote.sh, rollback-by-revert/rollback.sh): each
# sources this file as `. ../git-scenario.sh NAME "$@"` and gets
#   work, ARM_STATE_DIR   a scratch directory (argument 1, env ARM_EXAMPLE_DIR, or a new one)
#                         and armctl's state in it (argument 2, env ARM_STATE_DIR, or WORK/state);
#   repo, origin          where the fleet repository and its bare "origin" go (refused if they
#                         exist already);
#   step TEXT             a heading in the output;
#   git_as NAME EMAIL ... git in the fleet repository as a named person (authors who are
#                         Operators show up by name in the audit trail);
#   new_fleet_repository  the sample fleet committed to a new repository, with origin added;
#   record_evaluations VERSION...
#                         what the sample fleet's CI records for each version: a passing run of
#                         every EvaluationSuite that applies to it, submitted by priya-nair (who
#                         holds evaluations:submit), parents first for the regression baselines.
# Not meant to be run on its own.
set -euo pipefail

scenario="$1"
shift
sample="${ARM_SAMPLE_FLEET:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../fleet}"
work="${1:-${ARM_EXAMPLE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/arm-$scenario.XXXXXX")}}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
export ARM_STATE_DIR="${2:-${ARM_STATE_DIR:-$work/state}}"
# The scenario makes its own database: never touch one configured for real use.
unset ARM_DATABASE_URL ARM_REPO ARM_REF ARM_PATH ARM_OPA_URL
repo="$work/fleet-repo"
origin="$work/origin.git"

if [ -e "$repo" ] || [ -e "$origin" ]; then
  echo "$scenario.sh: $work already holds a fleet repository; give an empty WORK_DIR" >&2
  exit 1
fi

step() { printf '\n== %s\n' "$*"; }

git_as() {
  local name="$1" email="$2"
  shift 2
  GIT_AUTHOR_NAME="$name" GIT_AUTHOR_EMAIL="$email" GIT_COMMITTER_NAME="$name" GIT_COMMITTER_EMAIL="$email" \
    git -C "$repo" -c commit.gpgsign=false "$@"
}

new_fleet_repository() {
  git init -q -b main "$repo"
  cp -R "$sample" "$repo/fleet"
  git_as "Sam Okafor" sam.okafor@acme.example add -A
  git_as "Sam Okafor" sam.okafor@acme.example commit -qm "The Acme fleet"
  git init -q --bare "$origin"
  git -C "$repo" remote add origin "$origin"
}

record_evaluations() {
  local version suite
  local -a run
  for version in "$@"; do
    for suite in $(armctl version show "$version" --format json | python3 -c '
import json, sys
print(" ".join(e["suite"] for e in json.load(sys.stdin)["evidence"]))'); do
      case "$suite" in
        jailbreak-v2) run=(--metric refusal_rate=1.0 --samples 500) ;;
        support-regression) run=(--metric resolution_rate=0.88 --samples 1200) ;;
        refund-policy) run=(--metric policy_accuracy=0.97 --samples 200) ;;
        research-briefs) run=(--metric citation_accuracy=0.93 --metric p95_latency_seconds=31 --samples 80) ;;
        *) echo "record_evaluations: no sample run for suite $suite" >&2; return 1 ;;
      esac
      armctl eval submit --version "$version" --suite "$suite" "${run[@]}" --as priya-nair | sed -n "s/^Evidence: /  $version: /p"
    done
  done
}
