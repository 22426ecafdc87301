"""``armctl`` as a user runs it (a real process) over the sample fleet, applied to a real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests import armctl as armctl_
from tests import samples
from tests.conftest import GitRepo


class Armctl:
    """Runs ``python -m reconciler`` with its state, database and repository in the environment."""

    def __init__(self, tmp_path: Path, db_url: str, repo: GitRepo) -> None:
        self.env = {
            "ARM_STATE_DIR": str(tmp_path / "state"),
            "ARM_DATABASE_URL": db_url,
            "ARM_REPO": str(repo.path),
        }
        self.repo = repo
        self.engine = sa.create_engine(db_url)

    def __call__(self, *args: str) -> armctl_.Result:
        return armctl_.invoke(args, self.env)

    def ok(self, *args: str) -> armctl_.Result:
        result = self(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result

    def refused(self, *args: str) -> str:
        """Stderr of a command that must exit 1 with a message (``Type: message``, or click's usage
        error) and no traceback."""
        result = self(*args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        return result.stderr.strip()

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--format", "json").stdout)

    def rows(self, query: sa.Select[Any]) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]


def applied_sample(tmp_path: Path, db_url: str, repo: GitRepo) -> Armctl:
    """The sample fleet (already committed in ``repo``) applied with ``armctl init`` and ``apply``,
    its CI's evaluation runs recorded (``armctl eval submit``) and applied again."""
    armctl = Armctl(tmp_path, db_url, repo)
    armctl.ok("init")
    armctl.ok("apply")
    samples.record_sample_runs(armctl.ok)
    armctl.ok("apply")
    return armctl
