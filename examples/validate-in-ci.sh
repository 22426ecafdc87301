#!/usr/bin/env bash
# Validate the fleet at the pull request's head commit; exit non-zero with every problem listed.
# Usage: examples/validate-in-ci.sh [REF]   (run from the root of the fleet repository)
set -euo pipefail
ref="${1:-HEAD}"
armctl validate --repo . --ref "$ref" --path "${ARM_PATH:-fleet}"
