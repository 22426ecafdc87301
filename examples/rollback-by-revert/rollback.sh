#!/usr/bin/env bash
# Roll a Deployment back with `git revert`, end to end, on a scratch fleet repository: a new
# version support-agent@2.2.0 is added, support-agent-dev is moved to it and applied, then the
# move is reverted and applied, which the audit trail records as DEPLOYMENT_ROLLED_BACK.
#
# Usage: rollback.sh [WORK_DIR [STATE_DIR]]
#   WORK_DIR   where the fleet repository and its bare "origin" are made (env ARM_EXAMPLE_DIR;
#              default: a new temporary directory). It must not hold a fleet repository yet.
#   STATE_DIR  armctl's state directory, holding the SQLite database (env ARM_STATE_DIR;
#              default: WORK_DIR/state).
# Needs git, python3 and armctl on PATH (`. .venv/bin/activate`).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/../git-scenario.sh" rollback "$@"
deployment="support-agent-dev"

apply_main() {
  git -C "$repo" push -q origin main
  armctl apply --repo "$origin" --ref main | tail -n 1
}

step "1. A fleet repository: the sample fleet, pushed to a bare origin, applied"
new_fleet_repository
armctl init
apply_main

step "2. A new version, support-agent@2.2.0 (a new genome needs a new version with a parent)"
cat >"$repo/fleet/templates/support-agent/version-2.2.0.yaml" <<'YAML'
apiVersion: arm/v1
kind: AgentVersion
metadata:
  name: support-agent@2.2.0
  labels:
    team: support
spec:
  template: support-agent
  parent: support-agent@2.1.0
  lifecycle: TESTING
  genome:
    model:
      provider: anthropic
      name: claude-sonnet-4-5
      parameters:
        temperature: 0.7
        max_tokens: 4096
    prompts:
      - role: system
        file: prompts/support-system-v3.md
      - role: developer
        file: prompts/support-tone.md
    tools:
      - name: kb.search-articles
      - name: kb.get-article
      - name: crm.lookup-customer
      - name: crm.add-note
    memory:
      kind: session
    provenance:
      author: jordan.reyes@acme.example
      notes: Warmer tone (temperature 0.7), longer answers, fewer tools.
YAML
git_as "Jordan Reyes" jordan.reyes@acme.example add -A
git_as "Jordan Reyes" jordan.reyes@acme.example commit -qm "Add support-agent 2.2.0"
apply_main

step "3. Roll it out: $deployment moves from support-agent@2.1.0 to support-agent@2.2.0"
sed -i.bak "/name: $deployment\$/,/^---/ s/version: support-agent@2.1.0/version: support-agent@2.2.0/" "$repo/fleet/deployments.yaml"
rm -f "$repo/fleet/deployments.yaml.bak"
git -C "$repo" --no-pager diff --unified=1
git_as "Jordan Reyes" jordan.reyes@acme.example commit -qam "Roll out support-agent 2.2.0 to dev"
apply_main
armctl history --kind Deployment --name "$deployment" --sha "$(git -C "$repo" rev-parse HEAD)"

step "4. It misbehaves: on-call reverts the roll-out commit"
git_as "Sam Okafor" sam.okafor@acme.example revert --no-edit HEAD
git -C "$repo" --no-pager log --oneline -4
apply_main

step "5. The audit trail: DEPLOYMENT_ROLLED_BACK at the revert commit"
armctl history --kind Deployment --name "$deployment"
armctl history --kind Deployment --name "$deployment" --type DEPLOYMENT_ROLLED_BACK --format json | python3 -c '
import json, sys
records = json.load(sys.stdin)
if not records:
    sys.exit("rollback.sh: no DEPLOYMENT_ROLLED_BACK record")
r = records[-1]
before, after = r["before"]["version"], r["after"]["version"]
print("%s rolled back: %s -> %s at commit %s by %s" % (r["object_name"], before, after, r["sha"][:12], r["operator"] or r["author"]))
'
