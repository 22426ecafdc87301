"""Access: who a caller is (API tokens) and what an operator may do (roles and permissions).

Tokens are created once and shown once, stored only as a hash. A runtime token acts for one
tenant (optionally only some of its instances): it may ask decisions and send events. An
operator token acts as one Operator of the tenant: what it may approve or stop is decided by
that operator's roles, as applied from Git. A ci token acts for a tenant's evaluation pipeline
(optionally only for some of its templates): it may submit evaluation runs and read versions,
nothing else.

Every lookup of an operator's roles and permissions in the applied fleet is here
(:func:`operator_roles`, :func:`operator_permissions`, :func:`approver_roles`), and every check of
a permission goes through :func:`allows` (``resource:action``, with wildcards). ``approving``
and ``holds`` ask these; the planner reads roles from the commit it plans instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from typing import Any

import sqlalchemy as sa

from reconciler import errors
from reconciler.desired import models
from reconciler.state import tables

__all__ = [
    "Principal",
    "allows",
    "approver_roles",
    "create",
    "exists",
    "hash_token",
    "operator_permissions",
    "operator_roles",
    "resolve",
    "revoke",
]

PREFIX = "arm_"

#: The kinds of token, and what each is for (``armctl token create --kind``).
KINDS = ("runtime", "operator", "ci")


@dataclasses.dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    kind: str  # runtime | operator | ci
    tenant: str
    operator: str | None
    instances: frozenset[str] | None  # None: every instance of the tenant
    templates: frozenset[str] | None = None  # a ci token's templates; None: every template of the tenant

    def may_act_on(self, tenant: str, instance: str | None = None) -> bool:
        """Whether this token may ask decisions and send events for ``instance`` of ``tenant``:
        only a runtime token of that tenant, within its scope. An operator stops an instance
        with a control, not with cost ticks, whatever its roles."""
        if self.kind != "runtime" or tenant != self.tenant:
            return False
        return instance is None or self.instances is None or instance in self.instances

    def runtime_only(self, what: str) -> None:
        """Refuse an operator token ``what`` (asking decisions, sending events) with the reason."""
        if self.kind != "runtime":
            raise errors.Forbidden(f"token {self.name!r} is {article(self.kind)} {self.kind} token; {what} needs a runtime token")


def article(word: str) -> str:
    """``a`` or ``an`` before ``word`` as it is read (a ci token, an operator token)."""
    return "an" if word[:1] in "aeiou" else "a"


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def create(
    connection: sa.Connection,
    name: str,
    kind: str,
    tenant: str,
    now: dt.datetime,
    *,
    operator: str | None = None,
    instances: list[str] | None = None,
    templates: list[str] | None = None,
    ttl_days: int | None = None,
) -> str:
    """Store a new token and return it; it cannot be read back later."""
    if kind not in KINDS:
        raise errors.ConfigError(f"a token is a runtime, an operator or a ci token, not {kind!r}")
    if instances and kind == "ci":
        raise errors.ConfigError("a ci token is limited to templates, not instances")
    if templates and kind != "ci":
        raise errors.ConfigError("only a ci token is limited to templates")
    t = tables.tenants.c
    if connection.execute(sa.select(t.id).where(t.name == tenant, t.status == "ACTIVE")).first() is None:
        raise errors.NotFound(f"tenant {tenant!r} is not declared in the applied fleet")
    if kind == "operator":
        o = tables.operators.c
        if (
            not operator
            or connection.execute(sa.select(o.id).where(o.tenant == tenant, o.name == operator, o.status == "ACTIVE")).first()
            is None
        ):
            raise errors.NotFound(f"operator {operator!r} is not declared in tenant {tenant!r}")
    if instances:
        i = tables.instances.c
        known = set(connection.execute(sa.select(i.id).where(i.tenant == tenant, i.id.in_(instances))).scalars())
        missing = sorted(set(instances) - known)
        if missing:
            listed = ", ".join(repr(m) for m in missing)
            noun, verb = ("instance", "does") if len(missing) == 1 else ("instances", "do")
            raise errors.NotFound(f"{noun} {listed} {verb} not exist in tenant {tenant!r}")
    if templates:
        a = tables.agent_templates.c
        known = set(
            connection.execute(sa.select(a.name).where(a.tenant == tenant, a.status == "ACTIVE", a.name.in_(templates))).scalars()
        )
        missing = sorted(set(templates) - known)
        if missing:
            listed = ", ".join(repr(m) for m in missing)
            noun, verb = ("template", "is") if len(missing) == 1 else ("templates", "are")
            raise errors.NotFound(f"{noun} {listed} {verb} not declared in tenant {tenant!r}")
    k = tables.api_tokens.c
    live = sa.and_(k.name == name, k.revoked_at.is_(None), sa.or_(k.expires_at.is_(None), k.expires_at > now))
    if connection.execute(sa.select(k.id).where(live)).first() is not None:
        # A name is how a token is recognised and revoked: two live ones would be revoked together.
        raise errors.Conflict(
            f"a live token is already named {name!r}: revoke it first ('armctl token revoke --name {name}') or pick another name"
        )
    token = PREFIX + secrets.token_urlsafe(32)
    scope: dict[str, Any] = {"instances": sorted(instances)} if instances else {}
    if templates:
        scope["templates"] = sorted(set(templates))
    connection.execute(
        tables.api_tokens.insert(),
        {
            "name": name,
            "token_hash": hash_token(token),
            "kind": kind,
            "tenant": tenant,
            "operator": operator if kind == "operator" else None,
            "scope": scope,
            "created_at": now,
            "expires_at": now + dt.timedelta(days=ttl_days) if ttl_days else None,
        },
    )
    return token


def resolve(connection: sa.Connection, token: str, now: dt.datetime) -> Principal:
    """The principal a token stands for; ``errors.Forbidden`` says why when it stands for none."""
    k = tables.api_tokens.c
    row = connection.execute(sa.select(tables.api_tokens).where(k.token_hash == hash_token(token))).mappings().first()
    if row is None:
        raise errors.Forbidden("unknown token")
    if row["revoked_at"] is not None:
        raise errors.Forbidden(f"token {row['name']!r} was revoked")
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise errors.Forbidden(f"token {row['name']!r} expired")
    scope = row["scope"] or {}
    listed, templates = scope.get("instances"), scope.get("templates")
    return Principal(
        row["id"],
        row["name"],
        row["kind"],
        row["tenant"],
        row["operator"],
        frozenset(listed) if listed else None,
        frozenset(templates) if templates else None,
    )


def revoke(connection: sa.Connection, name: str, now: dt.datetime) -> int:
    k = tables.api_tokens.c
    return int(
        connection.execute(
            tables.api_tokens.update().where(k.name == name, k.revoked_at.is_(None)).values(revoked_at=now)
        ).rowcount
    )


def listing(connection: sa.Connection, now: dt.datetime) -> list[dict[str, Any]]:
    """Every token ever created, oldest first, with its status (``live``, ``expired``,
    ``revoked``); never its value or hash."""
    k = tables.api_tokens.c
    rows = connection.execute(
        sa.select(k.name, k.kind, k.tenant, k.operator, k.scope, k.created_at, k.expires_at, k.revoked_at).order_by(k.id)
    ).mappings()
    out = []
    for row in rows:
        if row["revoked_at"] is not None:
            status = "revoked"
        elif row["expires_at"] is not None and row["expires_at"] <= now:
            status = "expired"
        else:
            status = "live"
        out.append(dict(row) | {"scope": row["scope"] or {}, "status": status})
    return out


def exists(connection: sa.Connection, name: str) -> bool:
    """Whether a token named ``name`` was ever created (revoked ones included)."""
    k = tables.api_tokens.c
    return connection.execute(sa.select(k.id).where(k.name == name)).first() is not None


# ---------------------------------------------------------------- roles and permissions


def allows(permissions: Any, wanted: str) -> bool:
    """Whether ``permissions`` (a role's, or several roles') grant ``wanted`` (``resource:action``),
    directly or through a wildcard."""
    return models.grants(permissions, wanted)


def operator_roles(connection: sa.Connection, tenant: str, operator: str) -> list[str]:
    """The roles of an active operator of ``tenant``; ``errors.Forbidden`` when there is none."""
    o = tables.operators.c
    row = connection.execute(sa.select(o.spec, o.status).where(o.tenant == tenant, o.name == operator)).first()
    if row is None or row.status != "ACTIVE":
        raise errors.Forbidden(f"operator {operator!r} is not declared in tenant {tenant!r}")
    return list(row.spec.get("roles", []))


def operator_permissions(connection: sa.Connection, tenant: str, operator: str) -> set[str]:
    """The permissions an active operator of ``tenant`` holds through its roles."""
    roles = operator_roles(connection, tenant, operator)
    r = tables.roles.c
    permissions: set[str] = set()
    for role in connection.execute(sa.select(r.spec).where(r.tenant == tenant, r.name.in_(roles), r.status == "ACTIVE")):
        permissions.update(role.spec.get("permissions", []))
    return permissions


def approver_roles(connection: sa.Connection, tenant: str) -> list[str]:
    """The roles of ``tenant`` that may decide approvals (``approvals:decide``): who decides a tool
    call's approval when its envelope names no approver roles."""
    r = tables.roles.c
    rows = connection.execute(sa.select(r.name, r.spec).where(r.tenant == tenant, r.status == "ACTIVE"))
    return sorted(row.name for row in rows if allows(row.spec.get("permissions", []), "approvals:decide"))
