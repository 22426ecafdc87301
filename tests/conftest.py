"""Shared fixtures: real Git repositories built in ``tmp_path``, and the sample fleet."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FLEET = PROJECT_ROOT / "fleet"


class GitRepo:
    """A real repository on disk; ``commit`` writes files and returns the new commit's SHA."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str, author: str = "Ada Lovelace <ada@example.com>") -> str:
        name, _, email = author.partition(" <")
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email.rstrip(">"),
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email.rstrip(">"),
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        out = subprocess.run(["git", "-C", str(self.path), *args], check=True, capture_output=True, env=env, text=True)
        return out.stdout.strip()

    def write(self, files: Mapping[str, str | bytes | None]) -> None:
        """Write (or with ``None`` delete) files relative to the repository root."""
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")

    def commit(
        self,
        files: Mapping[str, str | bytes | None] | None = None,
        message: str = "change",
        author: str = "Ada Lovelace <ada@example.com>",
    ) -> str:
        if files:
            self.write(files)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message, author=author)
        return self.git("rev-parse", "HEAD")

    def copy_tree(self, source: Path, dest: str) -> None:
        shutil.copytree(source, self.path / dest, dirs_exist_ok=True)


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


@pytest.fixture
def sample_repo(tmp_path: Path) -> GitRepo:
    """A repository holding a copy of the sample fleet at ``fleet/``, committed once."""
    repo = GitRepo(tmp_path / "sample")
    repo.copy_tree(SAMPLE_FLEET, "fleet")
    repo.commit(message="sample fleet")
    return repo


POSTGRES_URL = os.environ.get("ARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in ``tmp_path``, or a private schema in PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'arm.db'}"
        return
    if os.environ.get("ARM_TEST_POSTGRES") == "off":
        pytest.skip("PostgreSQL tests disabled with ARM_TEST_POSTGRES=off")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
