"""``examples/README.md`` indexes every scenario, and every scenario is runnable as documented."""

from __future__ import annotations

import os
import re

from tests.examples.conftest import EXAMPLES, PROJECT_ROOT


def test_every_scenario_has_a_readme_linked_from_the_index_and_a_test() -> None:
    index = (EXAMPLES / "README.md").read_text()
    scenarios = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
    assert scenarios == [
        "docker-compose", "evaluate-in-ci", "opa-sidecar", "pr-plan", "promote-by-pr", "rollback-by-revert", "runtime-client",
    ]  # fmt: skip
    for name in scenarios:
        assert (EXAMPLES / name / "README.md").is_file(), name
        row = next((line for line in index.splitlines() if f"[`{name}/`]({name}/README.md)" in line), None)
        assert row is not None, f"{name} is not in examples/README.md"
        tests = re.findall(r"`(tests/[\w/]+\.py)`", row)
        assert tests and all((PROJECT_ROOT / t).is_file() for t in tests), row


def test_the_scripts_are_executable_bash_with_strict_mode() -> None:
    scripts = sorted(EXAMPLES.rglob("*.sh"))
    assert {s.relative_to(EXAMPLES).as_posix() for s in scripts} >= {
        "promote-by-pr/promote.sh",
        "rollback-by-revert/rollback.sh",
    }
    for script in scripts:
        text = script.read_text()
        assert os.access(script, os.X_OK), script
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert re.search(r"^set -(euo|uo) pipefail$", text, re.MULTILINE), script
