"""Manifest models: the desired state of a fleet, one frozen pydantic model per kind.

Every document in the fleet repository is ``apiVersion: arm/v1``, a ``kind`` from :data:`KINDS`,
``metadata`` and ``spec``. Models are frozen and forbid unknown fields so a typo in YAML is an
error, not a silently ignored field. ``loading`` turns parsed YAML into these models and
``checking`` validates the references between them; nothing here knows Git or a database.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import pydantic

from reconciler import money
from reconciler.desired import kinds

API_VERSION = kinds.API_VERSION

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(@[0-9A-Za-z.+_-]+)?$"
Name = Annotated[str, pydantic.StringConstraints(pattern=NAME_PATTERN, max_length=253)]
LabelKey = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9./_-]*[A-Za-z0-9])?$", max_length=253)]

#: What a Role may grant, ``resource:action``: what the reconciler checks before an operator
#: acts. ``resource:*``, ``*:action`` and ``*:*`` are wildcards over it.
PERMISSIONS: dict[str, tuple[str, ...]] = {
    "approvals": ("decide", "read"),
    "audit": ("read",),
    "deployments": ("approve", "read"),
    "evaluations": ("submit",),
    "instances": ("pause", "resume", "quarantine", "read-only", "drain", "read"),
    "tenants": ("pause", "quarantine", "resume"),
    "versions": ("approve", "read"),
}


def _known_permission(value: str) -> str:
    resource, _, action = value.partition(":")
    if resource == "*":
        known = action == "*" or any(action in actions for actions in PERMISSIONS.values())
    else:
        known = resource in PERMISSIONS and (action == "*" or action in PERMISSIONS[resource])
    if known:
        return value
    every = [f"{r}:{a}" for r, actions in PERMISSIONS.items() for a in actions]
    close = difflib.get_close_matches(value, every, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown permission {value!r}: {hint}known: {', '.join(every)}, and wildcards such as 'instances:*'")


def grants(permissions: Iterable[str], wanted: str) -> bool:
    """Whether ``permissions`` (a Role's, or several roles') include ``wanted`` (``resource:action``),
    directly or through a wildcard."""
    resource, _, action = wanted.partition(":")
    return not {wanted, f"{resource}:*", f"*:{action}", "*:*"}.isdisjoint(permissions)


Permission = Annotated[
    str,
    pydantic.StringConstraints(pattern=r"^([a-z][a-z-]*|\*):([a-z][a-z-]*|\*)$"),
    pydantic.AfterValidator(_known_permission),
]
Email = Annotated[str, pydantic.StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)]
#: An amount of the fleet's currency: the policy takes it in whole micro-units (reconciler.money).
Money = Annotated[float, pydantic.Field(ge=0, le=money.MAX_AMOUNT, allow_inf_nan=False)]


class Frozen(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=False, populate_by_name=False)


class VersionState(enum.StrEnum):
    DRAFT = "DRAFT"
    TESTING = "TESTING"
    CANDIDATE = "CANDIDATE"
    APPROVED = "APPROVED"
    DEPRECATED = "DEPRECATED"
    RETIRED = "RETIRED"


class Risk(enum.StrEnum):
    GREEN = "GREEN"
    YELLOW = "YELLOW"
    RED = "RED"


class Metadata(Frozen):
    name: Name
    tenant: Name | None = None
    labels: dict[LabelKey, str] = {}
    annotations: dict[LabelKey, str] = {}


# ---------------------------------------------------------------- Tenant, Project, Environment


class WideningRule(Frozen):
    """Who must approve a policy change that widens decisions (``policy.impact``)."""

    requiredApprovals: int = pydantic.Field(default=1, ge=1, le=10)
    approverRoles: tuple[Name, ...] = pydantic.Field(min_length=1)


class PolicyChanges(Frozen):
    """How a tenant governs changes to the policy that decides its tool calls: with
    ``widening``, an apply that would allow what was not allowed (or ask for approval where it
    denied) waits for that approval; narrowing changes apply at once."""

    widening: WideningRule | None = None


class TenantSpec(Frozen):
    displayName: str | None = None
    contact: Email | None = None
    policyChanges: PolicyChanges | None = None


class ProjectSpec(Frozen):
    displayName: str | None = None
    description: str | None = None
    owner: Email | None = None


class Admission(Frozen):
    """What an environment lets in: the lowest version lifecycle and who must approve."""

    minLifecycle: VersionState = VersionState.DRAFT
    requireApproval: bool = False
    requiredApprovals: int = pydantic.Field(default=1, ge=1, le=10)
    approverRoles: tuple[Name, ...] = ()


class EnvironmentSpec(Frozen):
    displayName: str | None = None
    production: bool = False
    admission: Admission = Admission()
    activation: Literal["heartbeat", "immediate"] = "heartbeat"
    #: silence before an instance is UNHEALTHY; unset: the daemon's ARM_HEARTBEAT_TIMEOUT_SECONDS
    heartbeatTimeoutSeconds: int | None = pydantic.Field(default=None, ge=1)


# ---------------------------------------------------------------- people and permissions


class OperatorSpec(Frozen):
    email: Email
    displayName: str | None = None
    roles: tuple[Name, ...] = ()


class RoleSpec(Frozen):
    description: str | None = None
    permissions: tuple[Permission, ...] = pydantic.Field(min_length=1)


# ---------------------------------------------------------------- tools


class Tool(Frozen):
    name: Name
    description: str | None = None
    risk: Risk
    writes: bool = False
    external: bool = False
    productionImpact: bool = False
    #: Arguments a plan's decision impact also asks this tool with (besides none at all), for
    #: fleet rules that read arguments: ``[{amount: 250}, {amount: 600}]``. Never stored in a
    #: decision; a probe's arguments are assessed like a call's.
    probes: tuple[dict[str, Any], ...] = pydantic.Field(default=(), max_length=20)


class ToolCatalogSpec(Frozen):
    tools: tuple[Tool, ...] = pydantic.Field(min_length=1)


# ---------------------------------------------------------------- templates and versions


class AgentTemplateSpec(Frozen):
    project: Name
    role: str
    description: str | None = None
    owner: Email


class ModelRef(Frozen):
    provider: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)


class ModelConfig(Frozen):
    provider: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)
    parameters: dict[str, Any] = {}
    fallbacks: tuple[ModelRef, ...] = ()


class Prompt(Frozen):
    """One prompt of the bundle; ``file`` is relative to the manifest's own directory."""

    role: Literal["system", "developer", "user", "few-shot", "tool"] = "system"
    file: str = pydantic.Field(min_length=1)


class ToolGrant(Frozen):
    name: Name
    config: dict[str, Any] = {}


class Memory(Frozen):
    kind: Literal["none", "session", "persistent"] = "none"
    ttlDays: int | None = pydantic.Field(default=None, ge=1)
    maxItems: int | None = pydantic.Field(default=None, ge=1)


class Provenance(Frozen):
    author: str | None = None
    source: str | None = None
    createdAt: str | None = None
    notes: str | None = None


class Genome(Frozen):
    """What an agent version *is*: write-once once the version exists."""

    model: ModelConfig
    prompts: tuple[Prompt, ...] = ()
    tools: tuple[ToolGrant, ...] = ()
    memory: Memory = Memory()
    provenance: Provenance = Provenance()


class Evaluation(Frozen):
    """A result stated in the manifest. No longer evidence: gates read the evaluation runs
    recorded through ``POST /v1/evaluations``; validation warns that this is ignored. Kept in the
    schema so manifests written before still load."""

    suite: str = pydantic.Field(min_length=1)
    score: float = pydantic.Field(ge=0, le=1)
    threshold: float = pydantic.Field(ge=0, le=1)
    passed: bool
    report: str | None = None
    runAt: str | None = None


class AgentVersionSpec(Frozen):
    template: Name
    parent: Name | None = None
    lifecycle: VersionState = VersionState.DRAFT
    genome: Genome
    genomeHash: Annotated[str, pydantic.StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None
    evaluations: tuple[Evaluation, ...] = ()


# ---------------------------------------------------------------- evaluation suites

#: The lifecycle steps a suite's evidence may be required for.
EVIDENCE_STEPS = ("TESTING->CANDIDATE", "CANDIDATE->APPROVED")
MetricName = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", max_length=128)]
FiniteNumber = Annotated[float, pydantic.Field(allow_inf_nan=False)]


class Metric(Frozen):
    """One metric of a suite: what a run must report, and the bar it must clear.

    ``unit: rate`` (a fraction between 0 and 1, shown as a percentage) is the default when the
    threshold lies between 0 and 1, ``number`` otherwise. ``significance`` (rates only) judges
    the conservative end of a 95% Wilson interval over the run's samples instead of the point
    value: the lower bound when higher is better, the upper bound when lower is better.
    """

    name: MetricName
    threshold: FiniteNumber
    direction: Literal["higher", "lower"] = "higher"
    significance: bool = False
    unit: Literal["rate", "number"] | None = None

    @pydantic.model_validator(mode="after")
    def _rate_fits(self) -> Metric:
        if self.unit == "rate" and not 0 <= self.threshold <= 1:
            raise ValueError(f"metric {self.name!r} is a rate: its threshold must lie between 0 and 1 (got {self.threshold})")
        if self.significance and self.kind != "rate":
            raise ValueError(f"metric {self.name!r}: significance needs a rate (a threshold between 0 and 1, or unit: rate)")
        return self

    @property
    def kind(self) -> str:
        """``rate`` or ``number``: the unit as stated, else as the threshold implies."""
        return self.unit or ("rate" if 0 <= self.threshold <= 1 else "number")


class LabelSelector(Frozen):
    labels: dict[LabelKey, str] = pydantic.Field(min_length=1)


class SuiteScope(Frozen):
    """Which templates a suite applies to: named, or selected by their labels (one of the two)."""

    templates: tuple[Name, ...] | None = pydantic.Field(default=None, min_length=1)
    selector: LabelSelector | None = None

    @pydantic.model_validator(mode="after")
    def _one_of(self) -> SuiteScope:
        if (self.templates is None) == (self.selector is None):
            raise ValueError(
                "name the templates ('templates: [...]') or select them by label ('selector: {labels: {...}}'), one of the two"
            )
        return self


class Requirement(Frozen):
    """Where a suite's passing evidence is required: lifecycle steps, admission to environments."""

    steps: tuple[Literal["TESTING->CANDIDATE", "CANDIDATE->APPROVED"], ...] = ("TESTING->CANDIDATE",)
    environments: tuple[Name, ...] = ()


class EvaluationSuiteSpec(Frozen):
    """What evidence a version needs: runs of this suite, recorded against its genome hash."""

    category: Literal["safety", "regression", "capability"]
    description: str | None = None
    metrics: tuple[Metric, ...]
    minSamples: int = pydantic.Field(default=1, ge=1, le=1_000_000_000)
    #: regression only: the largest drop from the baseline (the parent version's latest passing
    #: run) a metric may show, in the metric's unit (0.02 = two percentage points of a rate)
    maxRegression: Annotated[float, pydantic.Field(ge=0, allow_inf_nan=False)] | None = None
    appliesTo: SuiteScope
    requiredFor: Requirement = Requirement()
    #: continuous evaluation: what a failing run of a deployed version does to its instances
    onFailure: Literal["readonly", "pause", "none"] = "none"

    @pydantic.field_validator("metrics")
    @classmethod
    def _unique(cls, metrics: tuple[Metric, ...]) -> tuple[Metric, ...]:
        if not metrics:
            raise ValueError("a suite needs at least one metric: what a run must report, with its threshold")
        names = [m.name for m in metrics]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"metric {twice[0]!r} is declared twice")
        return metrics

    @pydantic.field_validator("maxRegression")
    @classmethod
    def _regression_only(cls, value: float | None, info: pydantic.ValidationInfo) -> float | None:
        category = info.data.get("category")
        if value is not None and category not in (None, "regression"):
            raise ValueError(f"maxRegression is for regression suites; this one is {category}")
        return value

    @pydantic.field_validator("onFailure")
    @classmethod
    def _restricts(cls, value: str, info: pydantic.ValidationInfo) -> str:
        if value != "none" and info.data.get("category") == "capability":
            raise ValueError("onFailure applies to safety and regression suites; a failing capability run restricts nothing")
        return value


# ---------------------------------------------------------------- policy envelopes


class EnvelopeScope(Frozen):
    kind: Literal["Tenant", "Project", "AgentTemplate", "AgentVersion"]
    name: Name


class ToolRules(Frozen):
    allow: tuple[Name, ...] | None = None
    deny: tuple[Name, ...] = ()
    requireApproval: tuple[Name, ...] = ()


class Budgets(Frozen):
    perCall: Money | None = None
    perRun: Money | None = None
    daily: Money | None = None


class LoopGuard(Frozen):
    threshold: int | None = pydantic.Field(default=None, ge=2)
    windowSeconds: int | None = pydantic.Field(default=None, ge=1)


class ApprovalRules(Frozen):
    requiredApprovals: int | None = pydantic.Field(default=None, ge=1, le=10)
    approverRoles: tuple[Name, ...] | None = None
    ttlSeconds: int | None = pydantic.Field(default=None, ge=60)
    # A request nobody has decided after this long may also be decided by ``escalateTo`` roles.
    escalateAfterSeconds: int | None = pydantic.Field(default=None, ge=60)
    escalateTo: tuple[Name, ...] | None = None


class PolicyEnvelopeSpec(Frozen):
    """Governance at one scope; an unset field inherits from the scope above."""

    scope: EnvelopeScope
    maxRisk: Risk | None = None
    approvalAbove: Risk | None = None
    tools: ToolRules = ToolRules()
    budgets: Budgets = Budgets()
    loop: LoopGuard = LoopGuard()
    approvals: ApprovalRules = ApprovalRules()


# ---------------------------------------------------------------- deployments


class Strategy(Frozen):
    type: Literal["AllAtOnce", "Canary"] = "AllAtOnce"
    steps: tuple[Annotated[int, pydantic.Field(ge=1, le=100)], ...] = ()
    autoRollback: bool = False

    @pydantic.field_validator("steps")
    @classmethod
    def _steps_increase(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if steps and (list(steps) != sorted(set(steps)) or steps[-1] != 100):
            raise ValueError("canary steps must increase strictly and end at 100")
        return steps

    @pydantic.model_validator(mode="after")
    def _steps_fit_type(self) -> Strategy:
        if self.type == "Canary" and not self.steps:
            raise ValueError("a Canary strategy needs weight steps, e.g. steps: [10, 50, 100]")
        if self.type != "Canary" and self.steps:
            raise ValueError("steps are only valid with type: Canary")
        return self


class DeploymentSpec(Frozen):
    template: Name
    environment: Name
    version: Name
    replicas: int = pydantic.Field(default=1, ge=0, le=10_000)
    strategy: Strategy = Strategy()


# ---------------------------------------------------------------- notification channels

#: An environment variable's name: where a channel's URL and signing secret are read at delivery.
EnvName = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


def _known_event(value: str) -> str:
    if value in kinds.NOTIFICATION_EVENTS:
        return value
    close = difflib.get_close_matches(value.upper(), kinds.NOTIFICATION_EVENTS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown event {value!r}: {hint}known: {', '.join(kinds.NOTIFICATION_EVENTS)}")


EventName = Annotated[str, pydantic.AfterValidator(_known_event)]


class FromEnv(Frozen):
    """A value read from the reconciler's environment when it is used, never written in Git."""

    fromEnv: EnvName

    @pydantic.model_validator(mode="before")
    @classmethod
    def _not_literal(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "name the environment variable that holds it ({fromEnv: SOME_VARIABLE}): a webhook URL or signing "
                "secret is a credential and is never written in Git"
            )
        return value


class NotificationChannelSpec(Frozen):
    """Where to tell people what happened: a webhook (``generic``: signed JSON) or a Slack-compatible
    incoming webhook (``slack``), for the listed events of the channel's tenant, optionally only
    those of some environments."""

    url: FromEnv
    format: Literal["generic", "slack"] = "generic"
    #: the HMAC-SHA256 key the body is signed with (``X-ARM-Signature-256``); required for generic
    secret: FromEnv | None = None
    events: tuple[EventName, ...]
    #: only events of these environments; unset: every event, those tied to no environment included
    environments: tuple[Name, ...] | None = pydantic.Field(default=None, min_length=1)

    @pydantic.field_validator("events")
    @classmethod
    def _once(cls, events: tuple[str, ...]) -> tuple[str, ...]:
        if not events:
            raise ValueError(f"list the events the channel is told, at least one of: {', '.join(kinds.NOTIFICATION_EVENTS)}")
        twice = sorted({e for e in events if events.count(e) > 1})
        if twice:
            raise ValueError(f"event {twice[0]!r} is listed twice")
        return events

    @pydantic.model_validator(mode="after")
    def _signed(self) -> NotificationChannelSpec:
        if self.format == "generic" and self.secret is None:
            raise ValueError(
                "a generic webhook's bodies are signed: name the environment variable holding the signing key "
                "(secret: {fromEnv: SOME_VARIABLE})"
            )
        return self


# ---------------------------------------------------------------- documents


class _Document(Frozen):
    apiVersion: Literal["arm/v1"]
    metadata: Metadata


class Tenant(_Document):
    kind: Literal["Tenant"]
    spec: TenantSpec = TenantSpec()


class Project(_Document):
    kind: Literal["Project"]
    spec: ProjectSpec = ProjectSpec()


class Environment(_Document):
    kind: Literal["Environment"]
    spec: EnvironmentSpec = EnvironmentSpec()


class Operator(_Document):
    kind: Literal["Operator"]
    spec: OperatorSpec


class Role(_Document):
    kind: Literal["Role"]
    spec: RoleSpec


class ToolCatalog(_Document):
    kind: Literal["ToolCatalog"]
    spec: ToolCatalogSpec


class AgentTemplate(_Document):
    kind: Literal["AgentTemplate"]
    spec: AgentTemplateSpec


class AgentVersion(_Document):
    kind: Literal["AgentVersion"]
    spec: AgentVersionSpec


class EvaluationSuite(_Document):
    kind: Literal["EvaluationSuite"]
    spec: EvaluationSuiteSpec


class PolicyEnvelope(_Document):
    kind: Literal["PolicyEnvelope"]
    spec: PolicyEnvelopeSpec


class Deployment(_Document):
    kind: Literal["Deployment"]
    spec: DeploymentSpec


class NotificationChannel(_Document):
    kind: Literal["NotificationChannel"]
    spec: NotificationChannelSpec


Manifest = (
    Tenant
    | Project
    | Environment
    | Operator
    | Role
    | ToolCatalog
    | AgentTemplate
    | EvaluationSuite
    | AgentVersion
    | PolicyEnvelope
    | Deployment
    | NotificationChannel
)

#: Kind name → model, in apply order (tenants before templates before versions before ...).
KINDS: dict[str, type[_Document]] = {
    "Tenant": Tenant,
    "Project": Project,
    "Environment": Environment,
    "Role": Role,
    "Operator": Operator,
    "ToolCatalog": ToolCatalog,
    "AgentTemplate": AgentTemplate,
    "EvaluationSuite": EvaluationSuite,
    "AgentVersion": AgentVersion,
    "PolicyEnvelope": PolicyEnvelope,
    "Deployment": Deployment,
    "NotificationChannel": NotificationChannel,
}


assert tuple(KINDS) == kinds.KIND_NAMES, "desired.kinds.KIND_NAMES must list the kinds in KINDS order"


def json_schema(kind: str | None = None) -> dict[str, Any]:
    """JSON Schema for one kind, or for any manifest document (for editor validation)."""
    if kind is not None:
        schema = KINDS[kind].model_json_schema()
        schema["$id"] = f"https://arm.dev/schemas/arm/v1/{kind}.json"
        return schema
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Annotated[Manifest, pydantic.Field(discriminator="kind")])
    schema = adapter.json_schema()
    schema["$id"] = "https://arm.dev/schemas/arm/v1/manifest.json"
    schema["title"] = "ARM manifest (arm/v1)"
    return schema
