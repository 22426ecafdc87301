"""Loading a fleet from real Git commits: refs, trees, caching, references and hostile input."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from reconciler import errors
from reconciler.desired import caching, genome, loading, repository
from reconciler.reconcile import validating
from tests.conftest import GitRepo
from tests.desired.fleetdocs import BASE


def load(repo: GitRepo, ref: str = "main", cache: caching.ParseCache | None = None, **kw: object) -> object:
    return loading.load(repository.Repository(repo.path), ref, "fleet", cache=cache, **kw)  # type: ignore[arg-type]


def problems_of(repo: GitRepo, files: dict[str, str | bytes | None]) -> list[tuple[object, ...]]:
    repo.commit({**BASE, **files})
    snap = validating.validate(repository.Repository(repo.path), "main", "fleet")
    return [(p.file, p.document, p.field, p.message) for p in snap.problems]


def test_the_base_fleet_is_valid_and_typed(git_repo: GitRepo) -> None:
    sha = git_repo.commit(BASE, message="add fleet\n\nbody", author="Grace Hopper <grace@example.com>")
    snap = load(git_repo)
    assert snap.problems == []
    assert snap.commit.sha == sha
    assert (snap.commit.author_name, snap.commit.author_email, snap.commit.summary) == (
        "Grace Hopper",
        "grace@example.com",
        "add fleet",
    )
    assert snap.revision == f"main@sha1:{sha}"
    counts = snap.counts()
    assert counts["AgentVersion"] == 1 and counts["ToolCatalog"] == 1 and counts["Deployment"] == 1
    version = snap.get("AgentVersion", "acme", "support-agent@1.0.0")
    assert version is not None and version.tenant == "acme"
    assert (version.origin.file, version.origin.document, version.origin.line) == ("fleet/agents/support.yaml", 1, 9)
    manifest = snap.manifest(version)
    expected = genome.genome_hash(
        genome.genome_document(manifest.spec.genome, {"prompts/system.md": genome.content_hash(b"You help customers.\n")})
    )
    assert snap.genome_hashes[("acme", "support-agent@1.0.0")] == expected
    assert snap.genome_document(version)["prompts"] == [{"contentHash": genome.content_hash(b"You help customers.\n")}]


def test_refs_resolve_to_full_shas(git_repo: GitRepo) -> None:
    first = git_repo.commit(BASE)
    git_repo.git("tag", "v1")
    second = git_repo.commit({"fleet/agents/prompts/system.md": "You help customers kindly.\n"})
    git_repo.git("branch", "release", first)
    repo = repository.Repository(git_repo.path)
    assert repo.resolve("main").sha == second
    assert repo.resolve("HEAD~1").sha == first
    assert repo.resolve("v1").sha == first
    assert repo.resolve("release").sha == first
    assert repo.resolve(first[:10]).sha == first
    assert repo.resolve(second).sha == second
    for bad in ["nope", "--upload-pack=x", "", "a b"]:
        with pytest.raises(errors.SourceError):
            repo.resolve(bad)


def test_the_commit_tree_is_read_not_the_working_copy(git_repo: GitRepo) -> None:
    git_repo.commit(BASE)
    (git_repo.path / "fleet/tenant.yaml").write_text("not: [valid", encoding="utf-8")
    (git_repo.path / "fleet/extra.yaml").write_text("kind: Nope\n", encoding="utf-8")
    assert load(git_repo).problems == []


def test_a_missing_fleet_path_is_a_source_error(git_repo: GitRepo) -> None:
    git_repo.commit(BASE)
    with pytest.raises(errors.SourceError, match="path 'elsewhere' does not exist"):
        loading.load(repository.Repository(git_repo.path), "main", "elsewhere")


def test_a_remote_url_is_mirrored_and_fetched(tmp_path: Path, git_repo: GitRepo) -> None:
    first = git_repo.commit(BASE)
    bare = tmp_path / "remote.git"
    git_repo.git("clone", "-q", "--bare", str(git_repo.path), str(bare))
    url = f"file://{bare}"
    repo = repository.Repository(url, cache_dir=tmp_path / "cache")
    assert loading.load(repo, "main", "fleet").commit.sha == first
    second = git_repo.commit({"fleet/agents/prompts/system.md": "Changed.\n"})
    git_repo.git("push", "-q", str(bare), "main")
    again = repository.Repository(url, cache_dir=tmp_path / "cache")
    assert again.resolve("main").sha == first  # the mirror is only as new as its last fetch
    again.fetch()
    assert loading.load(again, "main", "fleet").commit.sha == second


def test_an_unreachable_remote_is_a_source_error_without_credentials(tmp_path: Path) -> None:
    with pytest.raises(errors.SourceError) as caught:
        repository.Repository("https://user:s3cret@127.0.0.1:9/fleet.git", cache_dir=tmp_path)
    assert "s3cret" not in str(caught.value)
    assert repository.redact_url("https://user:s3cret@host/x.git") == "https://***@host/x.git"


def test_unchanged_files_are_cache_hits_on_a_new_commit(git_repo: GitRepo) -> None:
    git_repo.commit(BASE)
    cache = caching.ParseCache()
    load(git_repo, cache=cache)
    # One entry per manifest file, one per prompt file, one per version's genome hash.
    entries = sum(1 for p in BASE if p.endswith(".yaml")) + 1 + 1
    assert (cache.hits, cache.misses) == (0, entries)
    git_repo.commit(message="same content, new commit")
    cache.hits = cache.misses = 0
    assert load(git_repo, cache=cache).problems == []
    assert (cache.hits, cache.misses) == (entries, 0)
    git_repo.commit(
        {"fleet/tenant.yaml": BASE["fleet/tenant.yaml"].replace("{name: acme}", "{name: acme, labels: {tier: gold}}")}
    )
    cache.hits = cache.misses = 0
    assert load(git_repo, cache=cache).problems == []
    assert (cache.hits, cache.misses) == (entries - 1, 1)


def test_the_cache_persists_between_processes(tmp_path: Path, git_repo: GitRepo) -> None:
    git_repo.commit(BASE)
    load(git_repo, cache=caching.ParseCache(tmp_path / "cache"))
    fresh = caching.ParseCache(tmp_path / "cache")
    load(git_repo, cache=fresh)
    assert fresh.misses == 0 and fresh.hits > 0


def test_a_load_on_top_of_another_keeps_every_entry_for_the_next_process(tmp_path: Path, git_repo: GitRepo) -> None:
    # A pull-request plan loads the base, then the head on top of it (the files the head did not
    # touch taken from the base's snapshot, not asked of the cache): what it saves must still
    # hold the whole base, or the next plan parses the fleet again.
    git_repo.commit(BASE)
    git_repo.commit({"fleet/tenant.yaml": BASE["fleet/tenant.yaml"].replace("{name: acme}", "{name: acme, labels: {a: b}}")})
    repo = repository.Repository(git_repo.path)
    cache = caching.ParseCache(tmp_path / "cache")
    base = loading.load(repo, "main~1", "fleet", cache=cache)
    again = loading.load(repo, "main~1", "fleet", cache=cache, previous=base)
    loading.load(repo, "main", "fleet", cache=cache, previous=again)
    for ref in ("main~1", "main"):
        fresh = caching.ParseCache(tmp_path / "cache")
        assert loading.load(repo, ref, "fleet", cache=fresh).ok
        assert fresh.misses == 0, ref


def test_documents_read_again_come_from_the_cache_in_the_next_process(tmp_path: Path, git_repo: GitRepo) -> None:
    git_repo.commit(BASE)
    repo = repository.Repository(git_repo.path)
    parsed = loading.load(repo, "main", "fleet", cache=caching.ParseCache(tmp_path / "cache"))
    expected = {key: parsed.data(obj) for key, obj in parsed.objects.items()}
    genomes = {key: parsed.genome_text(obj) for key, obj in parsed.objects.items() if obj.kind == "AgentVersion"}
    for _ in range(2):  # the first reads every document again (and keeps them), the second finds them
        cache = caching.ParseCache(tmp_path / "cache")
        snap = loading.load(repo, "main", "fleet", cache=cache)
        assert snap.raw == {} and snap.genome_texts == {}  # summaries only: nothing was parsed
        cache.hits = cache.misses = 0
        snap.prefetch(list(snap.objects.values()))
        assert {key: snap.data(obj) for key, obj in snap.objects.items()} == expected
        assert {key: snap.genome_text(obj) for key, obj in snap.objects.items() if obj.kind == "AgentVersion"} == genomes
        assert snap._models == {}  # the genome came from the document's template, not from a model
    files = len({obj.origin.file for obj in snap.objects.values()})
    assert (cache.hits, cache.misses) == (files, 0)


def test_a_cache_that_keeps_documents_has_them_from_the_first_parse(tmp_path: Path, git_repo: GitRepo) -> None:
    git_repo.commit(BASE)
    repo = repository.Repository(git_repo.path)
    parsed = loading.load(repo, "main", "fleet", cache=caching.ParseCache(tmp_path / "cache", keep_documents=True))
    cache = caching.ParseCache(tmp_path / "cache")
    snap = loading.load(repo, "main", "fleet", cache=cache)
    cache.hits = cache.misses = 0
    snap.prefetch(list(snap.objects.values()))
    assert cache.misses == 0 and cache.hits == len({obj.origin.file for obj in snap.objects.values()})
    assert {k: snap.data(o) for k, o in snap.objects.items()} == {k: parsed.data(o) for k, o in parsed.objects.items()}


class _Planted:
    """What a poisoned cache file would hold: an object whose unpickling runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_planted_cache_runs_no_code_and_is_parsed_again(tmp_path: Path, git_repo: GitRepo) -> None:
    import pickle

    git_repo.commit(BASE)
    expected = load(git_repo, cache=caching.ParseCache(tmp_path / "cache"))
    path = tmp_path / "cache" / f"parsed-v{caching.FORMAT}.pickle"
    stored = pickle.loads(path.read_bytes())
    # A whole file that runs code, and one whose entries do.
    entries = {key: pickle.dumps(_Planted(tmp_path / "ran-entry")) for key in stored["last"]}
    for planted in (pickle.dumps(_Planted(tmp_path / "ran-file")), pickle.dumps({**stored, "last": entries})):
        path.write_bytes(planted)
        cache = caching.ParseCache(tmp_path / "cache")
        snap = load(git_repo, cache=cache)
        assert snap.problems == [] and snap.genome_hashes == expected.genome_hashes  # type: ignore[attr-defined]
        assert not (tmp_path / "ran-file").exists() and not (tmp_path / "ran-entry").exists()


@pytest.mark.parametrize(
    "module, name",
    [("reconciler.desired.documents", "Document"), ("reconciler.desired.documents", "_new_document"), ("builtins", "tuple")],
)
def test_a_cache_entry_cannot_change_a_class_or_function(module: str, name: str) -> None:
    # GLOBAL then BUILD with slot state: setattr on whatever GLOBAL pushed, for the whole process.
    planted = b"\x80\x04c" + f"{module}\n{name}\n".encode() + b"N}\x8c\x04kind\x8c\x04Evil\x73\x86b."
    with pytest.raises(pickle.UnpicklingError):
        caching._decode(planted)
    from reconciler.desired import documents

    assert documents.Document(0, 1, "Role", "r", None, "d").kind == "Role"


@pytest.mark.parametrize(
    "stored",
    [
        b"garbage",
        pickle.dumps({"format": caching.FORMAT, "last": ["k"]}),
        pickle.dumps({"format": caching.FORMAT, "before": {"k": 1}}),
    ],
    ids=["not a pickle", "a list for a generation", "an entry that is not encoded"],
)
def test_a_corrupt_cache_file_is_ignored(tmp_path: Path, git_repo: GitRepo, stored: bytes) -> None:
    git_repo.commit(BASE)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"parsed-v{caching.FORMAT}.pickle").write_bytes(stored)
    assert load(git_repo, cache=caching.ParseCache(tmp_path / "cache")).problems == []


TENANT = "fleet/tenant.yaml"
AGENTS = "fleet/agents/support.yaml"
DEPLOY = "fleet/deploy.yaml"
PEOPLE = "fleet/people.yaml"

REFERENCE_CASES = [
    (
        "template of a version is missing",
        {AGENTS: BASE[AGENTS].replace("template: support-agent\n", "template: support-agnt\n")},
        [
            (AGENTS, 1, "metadata.name", "a version of template 'support-agnt' must be named 'support-agnt@<version>'"),
            (AGENTS, 1, "spec.template", "AgentTemplate 'support-agnt' does not exist in tenant 'acme'"),
            (DEPLOY, 0, "spec.version", "version 'support-agent@1.0.0' belongs to template 'support-agnt', not 'support-agent'"),
        ],
    ),
    (
        "project of a template is missing",
        {AGENTS: BASE[AGENTS].replace("project: support", "project: sales")},
        [(AGENTS, 0, "spec.project", "Project 'sales' does not exist in tenant 'acme'")],
    ),
    (
        "deployment names a missing environment and version",
        {
            DEPLOY: BASE[DEPLOY]
            .replace("environment: prod", "environment: qa")
            .replace("version: support-agent@1.0.0", "version: support-agent@9.9.9")
        },
        [
            (DEPLOY, 0, "spec.environment", "Environment 'qa' does not exist in tenant 'acme'"),
            (DEPLOY, 0, "spec.version", "AgentVersion 'support-agent@9.9.9' does not exist in tenant 'acme'"),
        ],
    ),
    (
        "parent version is missing",
        {AGENTS: BASE[AGENTS].replace("lifecycle: DRAFT", "lifecycle: DRAFT\n  parent: support-agent@0.9.0")},
        [(AGENTS, 1, "spec.parent", "parent version 'support-agent@0.9.0' does not exist in tenant 'acme'")],
    ),
    (
        "operator role is missing",
        {PEOPLE: BASE[PEOPLE].replace("roles: [release-manager]", "roles: [release-manager, auditor]")},
        [(PEOPLE, 1, "spec.roles[1]", "Role 'auditor' does not exist in tenant 'acme'")],
    ),
    (
        "environment approver role is missing",
        {PEOPLE: BASE[PEOPLE].replace("approverRoles: [release-manager]", "approverRoles: [cab]")},
        [(PEOPLE, 2, "spec.admission.approverRoles[0]", "Role 'cab' does not exist in tenant 'acme'")],
    ),
    (
        "tool in a version's manifest is not in the catalog",
        {AGENTS: BASE[AGENTS].replace("tools: [{name: crm.lookup}]", "tools: [{name: crm.lookup}, {name: shell.exec}]")},
        [(AGENTS, 1, "spec.genome.tools[1]", "tool 'shell.exec' is not in the tool catalog of tenant 'acme'")],
    ),
    (
        "tool in an envelope is not in the catalog",
        {DEPLOY: BASE[DEPLOY].replace("deny: [email.send]", "deny: [email.send, sms.send]")},
        [(DEPLOY, 1, "spec.tools.deny[1]", "tool 'sms.send' is not in the tool catalog of tenant 'acme'")],
    ),
    (
        "envelope scope target is missing",
        {DEPLOY: BASE[DEPLOY].replace("scope: {kind: Tenant, name: acme}", "scope: {kind: AgentTemplate, name: billing-agent}")},
        [(DEPLOY, 1, "spec.scope.name", "AgentTemplate 'billing-agent' does not exist in tenant 'acme'")],
    ),
    (
        "duplicate names in one kind",
        {"fleet/more.yaml": "apiVersion: arm/v1\nkind: Project\nmetadata: {name: support}\n"},
        # Files are read in path order, so the first declaration is the one in the earlier path.
        [(TENANT, 1, "metadata.name", "duplicate Project 'support' (first declared at fleet/more.yaml:1)")],
    ),
    (
        "duplicate tool in the catalog",
        {"fleet/tools2.yaml": BASE["fleet/tools.yaml"].replace("name: tools", "name: tools2")},
        [
            (
                "fleet/tools2.yaml",
                0,
                "spec.tools[0].name",
                "tool 'crm.lookup' is declared twice (also in ToolCatalog 'tools' at fleet/tools.yaml:1)",
            ),
            (
                "fleet/tools2.yaml",
                0,
                "spec.tools[1].name",
                "tool 'email.send' is declared twice (also in ToolCatalog 'tools' at fleet/tools.yaml:1)",
            ),
        ],
    ),
    (
        "two operators share an email",
        {"fleet/bob.yaml": "apiVersion: arm/v1\nkind: Operator\nmetadata: {name: bob}\nspec: {email: Alice@acme.example}\n"},
        [
            (
                "fleet/bob.yaml",
                0,
                "spec.email",
                "email 'alice@acme.example' is already used by Operator 'alice' at fleet/people.yaml:7",
            )
        ],
    ),
    (
        "a tenant that does not exist",
        {"fleet/p.yaml": "apiVersion: arm/v1\nkind: Project\nmetadata: {name: x, tenant: globex}\n"},
        [("fleet/p.yaml", 0, "metadata.tenant", "Tenant 'globex' does not exist")],
    ),
    (
        "no default tenant with two tenants",
        {"fleet/t2.yaml": "apiVersion: arm/v1\nkind: Tenant\nmetadata: {name: globex}\n"},
        [
            (AGENTS, 0, "metadata.tenant", "required because the fleet has 2 tenants"),
            (AGENTS, 1, "metadata.tenant", "required because the fleet has 2 tenants"),
            (DEPLOY, 0, "metadata.tenant", "required because the fleet has 2 tenants"),
            (DEPLOY, 1, "metadata.tenant", "required because the fleet has 2 tenants"),
            (PEOPLE, 0, "metadata.tenant", "required because the fleet has 2 tenants"),
            (PEOPLE, 1, "metadata.tenant", "required because the fleet has 2 tenants"),
            (PEOPLE, 2, "metadata.tenant", "required because the fleet has 2 tenants"),
            (TENANT, 1, "metadata.tenant", "required because the fleet has 2 tenants"),
            ("fleet/tools.yaml", 0, "metadata.tenant", "required because the fleet has 2 tenants"),
        ],
    ),
    (
        "a parent of another template",
        {
            "fleet/other.yaml": (
                "apiVersion: arm/v1\nkind: AgentTemplate\nmetadata: {name: other}\n"
                "spec: {project: support, role: r, owner: o@acme.example}\n---\n"
                "apiVersion: arm/v1\nkind: AgentVersion\nmetadata: {name: other@1.0.0}\n"
                "spec: {template: other, parent: support-agent@1.0.0, genome: {model: {provider: p, name: m}}}\n"
            )
        },
        [
            (
                "fleet/other.yaml",
                1,
                "spec.parent",
                "parent version 'support-agent@1.0.0' belongs to template 'support-agent', not 'other'",
            )
        ],
    ),
    (
        "lineage cycle",
        {
            "fleet/cycle.yaml": "".join(
                f"---\napiVersion: arm/v1\nkind: AgentVersion\nmetadata: {{name: support-agent@{v}}}\n"
                f"spec: {{template: support-agent, parent: support-agent@{p}, genome: {{model: {{provider: p, name: m}}}}}}\n"
                for v, p in [("3.0.0", "4.0.0"), ("4.0.0", "5.0.0"), ("5.0.0", "3.0.0")]
            )
        },
        [
            (
                "fleet/cycle.yaml",
                0,
                "spec.parent",
                "lineage cycle: support-agent@3.0.0 -> support-agent@4.0.0 -> support-agent@5.0.0 -> support-agent@3.0.0",
            )
        ],
    ),
    (
        "a prompt file that does not exist",
        {"fleet/agents/prompts/system.md": None},
        [
            (
                AGENTS,
                1,
                "spec.genome.prompts[0].file",
                "prompt file 'fleet/agents/prompts/system.md' does not exist in this commit",
            )
        ],
    ),
    (
        "a prompt file outside the fleet path",
        {AGENTS: BASE[AGENTS].replace("prompts/system.md", "../../README.md"), "README.md": "hi\n"},
        [(AGENTS, 1, "spec.genome.prompts[0].file", "prompt file '../../README.md' escapes the fleet path")],
    ),
    (
        "an absolute prompt path",
        {AGENTS: BASE[AGENTS].replace("prompts/system.md", "/etc/passwd")},
        [(AGENTS, 1, "spec.genome.prompts[0].file", "prompt file '/etc/passwd' escapes the fleet path")],
    ),
    (
        "a prompt file that is not UTF-8",
        {"fleet/agents/prompts/system.md": b"\xff\xfe bad"},
        [(AGENTS, 1, "spec.genome.prompts[0].file", "prompt file 'fleet/agents/prompts/system.md' is not UTF-8 (byte 0)")],
    ),
    (
        "a stated genome hash that does not match",
        {AGENTS: BASE[AGENTS].replace("lifecycle: DRAFT", "lifecycle: DRAFT\n  genomeHash: sha256:" + "0" * 64)},
        [(AGENTS, 1, "spec.genomeHash", "stated sha256:" + "0" * 64 + " but the genome hashes to {HASH}")],
    ),
    (
        "a manifest file that is not UTF-8",
        {"fleet/bad.yaml": b"kind: Tenant\n\xc3\x28\n"},
        [("fleet/bad.yaml", None, None, "file is not UTF-8 (byte 13)")],
    ),
    (
        "a file above the size limit",
        {"fleet/huge.yaml": "# " + "x" * (1024 * 1024) + "\n"},
        [("fleet/huge.yaml", None, None, "file is 1048579 bytes, above the limit of 1048576")],
    ),
    (
        "Rego that does not parse",
        {"fleet/policies/bad.rego": "package arm.ext.bad\nimport rego.v1\ndeny contains msg if {\n  input.x ==\n}\n"},
        [("fleet/policies/bad.rego", None, None, "Rego does not compile: expecting expression")],
    ),
    (
        "Rego that calls a function that does not exist",
        {"fleet/policies/fn.rego": "package arm.ext.fn\nimport rego.v1\ndeny contains msg if {\n  msg := nonesuch(input.x)\n}\n"},
        [("fleet/policies/fn.rego", None, None, "Rego does not compile: Unknown function: 'nonesuch'")],
    ),
    (
        "Rego deny rules in a package the decision never consults",
        {"fleet/policies/team.rego": 'package acme.rules\nimport rego.v1\ndeny contains "no" if input.tool.name == "x"\n'},
        [
            (
                "fleet/policies/team.rego",
                None,
                None,
                "package acme.rules declares deny rules, but the decision gathers them only from packages directly"
                " under arm.ext: name the package arm.ext.<name>",
            )
        ],
    ),
    (
        "Rego approval rules in a package nested below arm.ext",
        {"fleet/policies/pay.rego": 'package arm.ext.team.payments\nimport rego.v1\napproval contains "ask" if true\n'},
        [
            (
                "fleet/policies/pay.rego",
                None,
                None,
                "package arm.ext.team.payments declares approval rules, but the decision gathers them only from packages"
                " directly under arm.ext: name the package arm.ext.<name>",
            )
        ],
    ),
    (
        "Rego deny rules in a package of the library's namespace other than arm.ext",
        {"fleet/policies/arm.rego": 'package arm.acme\nimport rego.v1\ndeny contains "no" if input.tool.name == "x"\n'},
        [
            (
                "fleet/policies/arm.rego",
                None,
                None,
                "package arm.acme declares deny rules, but the decision gathers them only from packages directly under"
                " arm.ext: name the package arm.ext.<name>",
            )
        ],
    ),
    (
        "a Rego module of helpers in a package of its own",
        {"fleet/policies/lib.rego": "package acme.lib\nimport rego.v1\nbig(x) if x > 10\n"},
        [],
    ),
]


@pytest.mark.parametrize(("case", "files", "expected"), REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_each_broken_reference_is_reported_where_it_is(
    git_repo: GitRepo, case: str, files: dict[str, str | bytes | None], expected: list[tuple[object, ...]]
) -> None:
    found = problems_of(git_repo, files)
    if any("{HASH}" in str(e[3]) for e in expected):
        snap = load(git_repo)
        computed = snap.genome_hashes[("acme", "support-agent@1.0.0")]
        expected = [(f, d, fld, str(m).replace("{HASH}", computed)) for f, d, fld, m in expected]
    assert sorted(found, key=str) == sorted(expected, key=str)


def test_a_stated_genome_hash_that_matches_is_accepted(git_repo: GitRepo) -> None:
    git_repo.commit(BASE)
    computed = load(git_repo).genome_hashes[("acme", "support-agent@1.0.0")]
    assert (
        problems_of(git_repo, {AGENTS: BASE[AGENTS].replace("lifecycle: DRAFT", f"lifecycle: DRAFT\n  genomeHash: {computed}")})
        == []
    )


def test_a_reference_problem_carries_the_line_of_its_field(git_repo: GitRepo) -> None:
    text = BASE[DEPLOY].replace("environment: prod", "environment: qa")
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "environment: qa" in row)
    assert line > 1  # not the document's first line
    git_repo.commit({**BASE, DEPLOY: text})
    (problem,) = load(git_repo).problems
    assert (problem.file, problem.document, problem.line) == (DEPLOY, 0, line)
    assert (
        str(problem)
        == f"fleet/deploy.yaml:{line}, document 0, field spec.environment: Environment 'qa' does not exist in tenant 'acme'"
    )


def test_a_symlink_in_the_fleet_path_is_refused(git_repo: GitRepo) -> None:
    git_repo.write(BASE)
    os.symlink("/etc/passwd", git_repo.path / "fleet/link.yaml")
    git_repo.commit()
    assert [(p.file, p.message) for p in load(git_repo).problems] == [
        ("fleet/link.yaml", "file is a symbolic link; links are not followed")
    ]


def test_a_symlinked_prompt_is_refused(git_repo: GitRepo) -> None:
    git_repo.write({**BASE, "fleet/agents/prompts/system.md": None})
    (git_repo.path / "fleet/agents/prompts").mkdir()
    os.symlink("/etc/hostname", git_repo.path / "fleet/agents/prompts/system.md")
    git_repo.commit()
    assert [(p.file, p.message) for p in load(git_repo).problems] == [
        ("fleet/agents/prompts/system.md", "prompt file is a symbolic link; links are not followed")
    ]


def test_a_lower_size_limit_is_honoured(git_repo: GitRepo) -> None:
    git_repo.commit(BASE)
    snap = load(git_repo, limits=loading.Limits(max_file_bytes=100))
    assert {p.file for p in snap.problems} >= {"fleet/agents/support.yaml", "fleet/people.yaml"}
    assert all("above the limit of 100" in p.message for p in snap.problems if p.field is None)


def test_every_problem_of_a_commit_is_reported_at_once(git_repo: GitRepo) -> None:
    found = problems_of(
        git_repo,
        {
            DEPLOY: BASE[DEPLOY].replace("environment: prod", "environment: qa"),
            "fleet/broken.yaml": "apiVersion: arm/v1\nkind: Tenant\nmetadata: {name: [}\n",
            PEOPLE: BASE[PEOPLE].replace("roles: [release-manager]", "roles: [ghost]"),
        },
    )
    assert {f for f, *_ in found} == {DEPLOY, "fleet/broken.yaml", PEOPLE}


def test_a_cache_directory_that_cannot_be_written_is_said_once(
    tmp_path: Path, git_repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    git_repo.commit(BASE)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    repo = repository.Repository(git_repo.path)
    cache = caching.ParseCache(blocked / "cache")
    assert loading.load(repo, "main", "fleet", cache=cache).ok
    git_repo.commit({"fleet/more.yaml": "apiVersion: arm/v1\nkind: Project\nmetadata: {name: other}\n"})
    assert loading.load(repo, "main", "fleet", cache=cache).ok  # a new file: something to save again
    warnings = [r.getMessage() for r in caplog.records if "cannot write parse cache" in r.getMessage()]
    assert len(warnings) == 1 and "Not a directory" in warnings[0]


def test_a_parse_worker_that_dies_leaves_its_files_to_the_parent(git_repo: GitRepo) -> None:
    # The OOM killer, say: the load finishes in the parent, with what a load in one process
    # finds. Enough files (past loading._PARALLEL_FROM) that workers parse them.
    from tests.oomkiller import killing_first_worker

    projects = {
        f"fleet/projects/p{i:04}.yaml": f"apiVersion: arm/v1\nkind: Project\nmetadata: {{name: p{i}}}\n" for i in range(1500)
    }
    git_repo.commit({**BASE, **projects})
    repo = repository.Repository(git_repo.path)
    alone = loading.load(repo, "main", "fleet", cache=caching.ParseCache())
    with killing_first_worker() as killed:
        forked = loading.load(repo, "main", "fleet", cache=caching.ParseCache(), workers=2)
    assert killed and forked.ok and forked.objects == alone.objects and forked.genome_hashes == alone.genome_hashes
