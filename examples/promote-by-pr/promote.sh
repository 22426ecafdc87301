#!/usr/bin/env bash
# Promote an AgentVersion through a pull request, end to end, on a scratch fleet repository:
# the PR raises support-agent@2.0.0 from CANDIDATE to APPROVED, CI posts the plan, the merge is
# applied and waits for a release manager, an approval unblocks it, the next apply takes the step.
#
# Usage: promote.sh [WORK_DIR [STATE_DIR]]
#   WORK_DIR   where the fleet repository and its bare "origin" are made (env ARM_EXAMPLE_DIR;
#              default: a new temporary directory). It must not hold a fleet repository yet.
#   STATE_DIR  armctl's state directory, holding the SQLite database (env ARM_STATE_DIR;
#              default: WORK_DIR/state).
# Needs git, python3 and armctl on PATH (`. .venv/bin/activate`).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/../git-scenario.sh" promote "$@"
version="support-agent@2.0.0"
branch="promote-support-agent-2.0.0"

step "1. A fleet repository: the sample fleet, pushed to a bare origin"
new_fleet_repository
git -C "$repo" push -q -u origin main
echo "repository $repo, origin $origin, state $ARM_STATE_DIR"

step "2. The reconciler applies origin/main; versions wait at TESTING for evaluation runs"
armctl init
armctl apply --repo "$origin" --ref main | tail -n 1
armctl status | grep -F "AgentVersion $version:"

step "2b. CI records the evaluation runs; the next apply takes the steps they unblock"
record_evaluations support-agent@1.0.0 support-agent@1.1.0 "$version" billing-agent@1.0.0 research-agent@0.1.0
armctl apply --repo "$origin" --ref main | tail -n 1

step "3. A pull request raises $version from CANDIDATE to APPROVED"
git -C "$repo" switch -q -c "$branch"
versions="$repo/fleet/templates/support-agent/versions.yaml"
sed -i.bak "/name: $version/,/^---/ s/lifecycle: CANDIDATE/lifecycle: APPROVED/" "$versions"
rm -f "$versions.bak"
git -C "$repo" --no-pager diff --unified=1
git_as "Jordan Reyes" jordan.reyes@acme.example commit -qam "Promote $version to APPROVED"
git -C "$repo" push -q origin "$branch"

step "4. CI posts the plan as a pull-request comment (exit 2: the merge changes something)"
# The runs production recorded, as a ci token reads them (curl -H "Authorization: Bearer \$ARM_CI_TOKEN"
# https://arm.example/v1/evaluations): the scratch database the plan runs on starts with them.
armctl eval list --format json >"$work/runs.json"
code=0
(cd "$repo" && armctl plan --repo . --base origin/main --head HEAD --evidence "$work/runs.json" --format markdown) >"$work/plan.md" || code=$?
cat "$work/plan.md"
if [ "$code" -ne 2 ]; then
  echo "promote.sh: armctl plan exited $code, expected 2 (changes)" >&2
  exit 1
fi

step "5. The pull request is merged and the reconciler applies main"
git -C "$repo" switch -q main
git_as "Sam Okafor" sam.okafor@acme.example merge -q --no-ff -m "Merge pull request #58: promote $version" "$branch"
git -C "$repo" push -q origin main
armctl apply --repo "$origin" --ref main | tail -n 1

step "6. The version waits for an approval from a release manager"
armctl status | grep -F "AgentVersion $version:"
approval="$(armctl approvals list --format json | python3 -c '
import json, sys
wanted = sys.argv[1]
print(next(a["id"] for a in json.load(sys.stdin) if a["subject_name"] == wanted and a["status"] == "PENDING"))
' "$version")"
armctl approvals list | grep -F "AgentVersion/$version"

step "7. The author may not approve it (viewer role); a release manager does"
if armctl approvals approve "$approval" --as jordan-reyes -m "looks good to me" 2>&1; then
  echo "promote.sh: jordan-reyes approved without a permitted role" >&2
  exit 1
fi
armctl approvals approve "$approval" --as maya-chen -m "Evaluations green; reviewed in PR #58"

step "8. The next apply takes the step the approval unblocked"
armctl apply --repo "$origin" --ref main | tail -n 1
armctl history --type APPROVAL_DECIDED
armctl history --kind AgentVersion --name "$version"
armctl history --kind AgentVersion --name "$version" --type VERSION_TRANSITIONED --format json | python3 -c '
import json, sys
last = json.load(sys.stdin)[-1]
before, after = last["before"]["lifecycle"], last["after"]["lifecycle"]
print("%s: %s -> %s at commit %s, run %s" % (last["object_name"], before, after, last["sha"][:12], last["run_id"]))
'
