"""Agent cards: one version as an A2A AgentCard, extended with what ARM knows of it, signed.

``armctl version card NAME`` and ``GET /v1/versions/{name}/card`` give :func:`card`: the shape of
an A2A ``AgentCard`` (``protocolVersion``, ``name``, ``description``, ``version``, ``provider``,
``capabilities``, default modes, and ``skills``: one per tool the genome grants, described from
the tool catalog and tagged with its risk, its flags and what the effective envelope says of it),
extended with the ARM facts at the top level: ``tenant``, ``template``, ``genomeHash``,
``lifecycle``, ``integrity`` (the stored genome re-hashed as the card is made), ``evaluation``
(each suite that applies: status, run, samples, summary; and the overall status), ``approvals``
(who decided which step, when), ``envelope`` (the effective envelope's summary) and the
``revision`` applied. The extension is declared in ``capabilities.extensions`` (:data:`EXTENSION`),
as A2A declares extensions.

The card is signed as A2A signs cards (``signatures``: a JWS, RFC 7515, with a detached payload):
the payload is the card without ``signatures`` in canonical JSON (``desired.genome``'s: sorted
keys, no whitespace, numbers as ECMAScript writes them: RFC 8785's form), the protected header
``{"alg": "EdDSA", "kid", "typ": "JOSE"}``, and the signature Ed25519 over
``BASE64URL(header) + "." + BASE64URL(payload)`` with the current key (``evidence.keys``), whose
public half ``GET /v1/keys`` publishes. :func:`verify` checks a card with nothing but the card
and the public keys (``armctl version verify-card``).

Built on ``evidence.scorecards`` (the same lineage, evidence and approvals a scorecard shows).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from reconciler import errors
from reconciler.desired import genome
from reconciler.evidence import keys as keys_
from reconciler.evidence import scorecards
from reconciler.state import database, fleetstate, tables

__all__ = ["ARM_FIELDS", "EXTENSION", "PROTOCOL_VERSION", "card", "not_signing", "payload", "sign", "verify"]

#: The A2A protocol version whose AgentCard shape (and card signatures) the card follows.
PROTOCOL_VERSION = "0.3.0"
#: The extension that declares the ARM facts a card carries beside A2A's fields.
EXTENSION = "urn:arm:agent-card:facts:v1"
#: Card fields that are ARM facts (the extension's), not A2A's.
ARM_FIELDS = (
    "tenant", "template", "project", "labels", "genomeHash", "model", "lifecycle", "desiredLifecycle", "integrity", "parent",
    "evaluation", "approvals", "envelope", "deployedTo", "revision", "issuedAt",
)  # fmt: skip


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def card(db: database.Engine, tenant: str | None, name: str, now: dt.datetime, *, resolve: bool = False) -> dict[str, Any]:
    """The unsigned card of version ``name`` (see the module docstring); the genome is re-hashed
    as the scorecard does (``scorecards.show``). ``errors.NotFound`` for an unknown version."""
    scorecard = scorecards.show(db, tenant, name, now, resolve=resolve)
    tenant = scorecard["tenant"]
    with database.reading(db) as connection:
        facts = _facts(connection, tenant, scorecard)
    return _assemble(scorecard, facts, now)


def _facts(connection: sa.Connection, tenant: str, scorecard: Mapping[str, Any]) -> dict[str, Any]:
    v, t, c = tables.agent_versions.c, tables.agent_templates.c, tables.tool_catalogs.c
    version = connection.execute(
        sa.select(v.genome, v.envelope, v.envelope_digest, v.labels).where(v.tenant == tenant, v.name == scorecard["name"])
    ).one()
    template = connection.execute(
        sa.select(t.spec, t.project).where(t.tenant == tenant, t.name == scorecard["template"])
    ).first()  # fmt: skip
    catalog: dict[str, Any] = {}
    for spec in connection.execute(sa.select(c.spec).where(c.tenant == tenant, c.status == "ACTIVE").order_by(c.name)).scalars():
        for entry in spec.get("tools", []):
            catalog.setdefault(entry["name"], entry)
    revision = (fleetstate.read(connection) or {}).get("applied_sha")
    return {
        "genome": version.genome,
        "envelope": version.envelope,
        "envelopeDigest": version.envelope_digest,
        "labels": version.labels or {},
        "template": dict(template.spec) if template is not None else {},
        "project": template.project if template is not None else None,
        "catalog": catalog,
        "revision": revision,
    }


def _assemble(scorecard: Mapping[str, Any], facts: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    name, template = scorecard["name"], scorecard["template"]
    spec = facts["template"]
    model = facts["genome"].get("model", {})
    envelope = facts["envelope"] or {}
    description = spec.get("description") or spec.get("role") or f"{template} agent"
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "name": name,
        "description": description,
        "version": name.partition("@")[2] or name,
        "provider": {"organization": scorecard["tenant"], **({"contact": spec["owner"]} if spec.get("owner") else {})},
        "capabilities": {
            "streaming": False,
            "pushNotifications": False,
            "extensions": [
                {
                    "uri": EXTENSION,
                    "description": "ARM facts of this version: " + ", ".join(ARM_FIELDS),
                    "required": False,
                }
            ],
        },
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": _skills(facts["genome"], facts["catalog"], envelope),
        "tenant": scorecard["tenant"],
        "template": template,
        "project": facts["project"],
        "labels": facts["labels"],
        "genomeHash": scorecard["genomeHash"],
        "model": {"provider": model.get("provider"), "name": model.get("name")},
        "lifecycle": scorecard["lifecycle"],
        "desiredLifecycle": scorecard["desiredLifecycle"],
        "integrity": {"status": scorecard["integrity"]["status"], "checkedAt": scorecard["integrity"]["checkedAt"]},
        "parent": scorecard["lineage"]["parent"],
        "evaluation": _evaluation(scorecard["evidence"]),
        "approvals": [
            {
                "id": a["id"],
                "transition": a["transition"],
                "status": a["status"],
                "decisions": [{k: d.get(k) for k in ("operator", "decision", "at")} for d in a["decisions"]],
            }
            for a in scorecard["approvals"]
        ],
        "envelope": _envelope(envelope, facts["envelopeDigest"]),
        "deployedTo": sorted({d["environment"] for d in scorecard["deployments"] if d["state"] != "RETIRED"}),
        "revision": facts["revision"],
        "issuedAt": now.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def _skills(genome_doc: Mapping[str, Any], catalog: Mapping[str, Any], envelope: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One A2A skill per tool the genome grants: id and name the tool's, described from the
    catalog, tagged with its risk, its flags and what the envelope says of it."""
    tools = envelope.get("tools") or {}
    allow, deny, ask = tools.get("allow"), set(tools.get("deny") or ()), set(tools.get("requireApproval") or ())
    skills = []
    for grant in genome_doc.get("tools", []):
        tool = grant["name"]
        entry = catalog.get(tool)
        tags = [f"risk:{entry['risk']}"] if entry else ["not-in-catalog"]
        tags += [flag for flag in ("writes", "external", "productionImpact") if entry and entry.get(flag)]
        if tool in deny or (allow is not None and tool not in allow):
            tags.append("denied-by-envelope")
        elif tool in ask:
            tags.append("requires-approval")
        described = (entry or {}).get("description") or f"the {tool} tool"
        skills.append({"id": tool, "name": tool, "description": described, "tags": tags})
    return skills


def _evaluation(evidence: list[Mapping[str, Any]]) -> dict[str, Any]:
    statuses = {e["status"] for e in evidence}
    overall = next((s for s in ("failing", "missing", "passing") if s in statuses), "none")
    return {
        "status": overall,
        "suites": [
            {k: e[k] for k in ("suite", "category", "status", "run", "samples", "summary")} | {"at": e.get("runAt")}
            for e in evidence
        ],
    }


def _envelope(envelope: Mapping[str, Any], digest: str | None) -> dict[str, Any]:
    """What the effective envelope allows, in short: where it comes from, the risk ceilings, the
    budgets (currency units), the tool lists and who approves."""
    tools = envelope.get("tools") or {}
    approvals = envelope.get("approvals") or {}
    return {
        "digest": digest,
        "sources": list(envelope.get("sources") or []),
        "maxRisk": envelope.get("maxRisk"),
        "approvalAbove": envelope.get("approvalAbove"),
        "budgets": dict(envelope.get("budgets") or {}),
        "tools": {"allow": tools.get("allow"), "deny": list(tools.get("deny") or []),
                  "requireApproval": list(tools.get("requireApproval") or [])},
        "approvers": {"roles": approvals.get("approverRoles"), "required": approvals.get("requiredApprovals")},
    }  # fmt: skip


def payload(document: Mapping[str, Any]) -> bytes:
    """What a card's signatures cover: the card without ``signatures``, canonical JSON."""
    return genome.canonical_json({k: v for k, v in document.items() if k != "signatures"})


def sign(document: Mapping[str, Any], signer: keys_.Signer) -> dict[str, Any]:
    """The card with ``signatures``: one JWS (detached payload) by ``signer``."""
    header = _b64url(json.dumps({"alg": keys_.ALGORITHM, "kid": signer.kid, "typ": "JOSE"}, separators=(",", ":")).encode())
    signature = signer.sign(f"{header}.{_b64url(payload(document))}".encode())
    unsigned = {k: v for k, v in document.items() if k != "signatures"}
    return unsigned | {"signatures": [{"protected": header, "signature": _b64url(signature), "header": {"kid": signer.kid}}]}


def verify(document: Any, public_keys: Mapping[str, keys_.PublicKey]) -> tuple[str | None, list[str]]:
    """(the id of the key whose signature verifies, or None; the problems found). A card is
    verified when one of its signatures, by one of ``public_keys``, covers it as it is."""
    if not isinstance(document, dict):
        return None, ["the card is not a JSON object"]
    signatures = document.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        return None, ["the card carries no signatures"]
    try:
        signed = _b64url(payload(document))
    except (TypeError, ValueError) as exc:
        return None, [f"the card has no canonical form: {exc}"]
    problems = []
    for number, entry in enumerate(signatures, 1):
        try:
            protected = entry["protected"]
            header = json.loads(_unb64url(protected))
            raw = _unb64url(entry["signature"])
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            problems.append(f"signature {number} is malformed ({type(exc).__name__}: {exc})")
            continue
        if not isinstance(header, dict) or header.get("alg") != keys_.ALGORITHM:
            problems.append(
                f"signature {number}: algorithm {header.get('alg') if isinstance(header, dict) else None!r} is not EdDSA"
            )
            continue
        key = public_keys.get(str(header.get("kid")))
        if key is None:
            problems.append(f"signature {number} is by key {header.get('kid')}, which is not a known key")
        elif key.verify(raw, f"{protected}.{signed}".encode()):
            return key.kid, []
        else:
            problems.append(f"signature {number} by key {key.kid} does not verify: the card was changed after it was signed")
    return None, problems


def not_signing() -> errors.Conflict:
    """What a server without a signing key answers for a card (409): an unsigned card vouches for
    nothing, so none is given."""
    return errors.Conflict(
        "this server has no signing key, so it cannot sign agent cards: start it with one (armctl serve makes one)"
    )
