"""A load that reuses the previous snapshot gives exactly what a full load of the commit gives."""

from __future__ import annotations

import pytest

from reconciler.desired import caching, loading, repository, snapshot
from tests.conftest import GitRepo
from tests.desired.fleetdocs import BASE

AGENTS = "fleet/agents/support.yaml"
V2 = """\
---
apiVersion: arm/v1
kind: AgentVersion
metadata: {name: support-agent@2.0.0}
spec:
  template: support-agent
  parent: support-agent@1.0.0
  genome:
    model: {provider: openai, name: gpt-4o}
    prompts: [{file: prompts/system.md}]
"""


def _view(snap: snapshot.Snapshot) -> tuple[object, ...]:
    return (
        {k: (o.doc.digest, o.origin.file, o.origin.document) for k, o in snap.objects.items()},
        list(snap.objects),
        snap.genome_hashes,
        snap.prompt_hashes,
        sorted(snap.problems),
        snap.rego,
    )


CHANGES = [
    ("a new version in a changed file", {AGENTS: BASE[AGENTS] + V2}),
    ("a prompt file edited", {"fleet/agents/prompts/system.md": "You help customers, kindly.\n"}),
    ("a file removed", {"fleet/deploy.yaml": None}),
    ("a new file", {"fleet/more/p.yaml": "apiVersion: arm/v1\nkind: Project\nmetadata: {name: other}\n"}),
    ("a duplicate introduced", {"fleet/a-dup.yaml": "apiVersion: arm/v1\nkind: Project\nmetadata: {name: support}\n"}),
    ("a broken reference", {"fleet/deploy.yaml": BASE["fleet/deploy.yaml"].replace("environment: prod", "environment: qa")}),
    ("a second tenant", {"fleet/t2.yaml": "apiVersion: arm/v1\nkind: Tenant\nmetadata: {name: globex}\n"}),
]


@pytest.mark.parametrize(("case", "files"), CHANGES, ids=[c[0] for c in CHANGES])
def test_an_incremental_load_equals_a_full_load(git_repo: GitRepo, case: str, files: dict[str, str | None]) -> None:
    git_repo.commit(BASE)
    repo = repository.Repository(git_repo.path)
    cache = caching.ParseCache()
    first = loading.load(repo, "main", "fleet", cache=cache)
    assert first.ok
    git_repo.commit(files)  # type: ignore[arg-type]
    incremental = loading.load(repo, "main", "fleet", cache=cache, previous=first)
    full = loading.load(repo, "main", "fleet", cache=caching.ParseCache())
    assert _view(incremental) == _view(full)
    assert incremental.tree == full.tree


def test_a_prompt_file_named_like_a_manifest_still_counts_as_a_prompt(git_repo: GitRepo) -> None:
    files = {
        **BASE,
        AGENTS: BASE[AGENTS].replace("prompts/system.md", "prompts/system.yaml"),
        "fleet/agents/prompts/system.md": None,
    }
    files["fleet/agents/prompts/system.yaml"] = "# You help customers.\n"
    git_repo.commit(files)
    repo = repository.Repository(git_repo.path)
    cache = caching.ParseCache()
    first = loading.load(repo, "main", "fleet", cache=cache)
    assert first.ok
    git_repo.commit({"fleet/agents/prompts/system.yaml": "# You help customers, and something else now.\n"})
    incremental = loading.load(repo, "main", "fleet", cache=cache, previous=first)
    full = loading.load(repo, "main", "fleet", cache=caching.ParseCache())
    assert incremental.genome_hashes == full.genome_hashes != first.genome_hashes


def test_a_fallback_to_a_full_load_reports_each_problem_once(git_repo: GitRepo) -> None:
    git_repo.commit(BASE)
    repo = repository.Repository(git_repo.path)
    cache = caching.ParseCache()
    first = loading.load(repo, "main", "fleet", cache=cache)
    git_repo.commit(
        {
            "fleet/a-bad.yaml": "apiVersion: arm/v1\nkind: Project\nmetadata: {name: p2, tenant: nope}\n",
            "fleet/b-dup.yaml": "apiVersion: arm/v1\nkind: Project\nmetadata: {name: support}\n",
        }
    )
    incremental = loading.load(repo, "main", "fleet", cache=cache, previous=first)
    full = loading.load(repo, "main", "fleet", cache=caching.ParseCache())
    assert sorted(incremental.problems) == sorted(full.problems)
    assert len([p for p in incremental.problems if "does not exist" in p.message]) == 1
