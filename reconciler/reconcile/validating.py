"""Validating a commit: the spec checks plus a compile check of all Rego that would load.

``validate`` is what ``armctl validate`` runs and what every reconcile runs first: a snapshot
whose ``problems`` is empty is safe to plan. The Rego compile result is cached by the content of
the modules, since library and fleet policy change far less often than manifests.
"""

from __future__ import annotations

from reconciler import settings as settings_
from reconciler.desired import caching, loading, repository, snapshot
from reconciler.policy import compiling, library

__all__ = ["validate"]


def validate(
    repo: repository.Repository,
    ref: str,
    path: str,
    *,
    cache: caching.ParseCache | None = None,
    limits: loading.Limits | None = None,
    workers: int = 1,
    previous: snapshot.Snapshot | None = None,
) -> snapshot.Snapshot:
    cache = cache if cache is not None else caching.ParseCache()
    snap = loading.load(repo, ref, path, cache=cache, limits=limits, workers=workers, previous=previous)
    modules = library.modules_for(snap.rego)
    key = f"r:{library.digest(modules)}"
    problems = cache.get(key)
    if problems is None:
        problems = tuple(compiling.check_modules(modules, compile_only=snap.rego.keys()))
        cache.put(key, problems)
        cache.save()
    snap.problems.extend(problems)
    return snap


def limits_from(settings: settings_.Settings) -> loading.Limits:
    return loading.Limits(max_file_bytes=settings.max_file_bytes)
