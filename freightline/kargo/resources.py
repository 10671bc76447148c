"""Pydantic models of the resources Freightline is configured with.

The kinds, field names, defaults, enums and bounds follow Kargo's CRDs
(``kargo.akuity.io/v1alpha1``: Project, ProjectConfig, Warehouse, Stage,
PromotionTask, Freight, Promotion) and Argo Rollouts' ``AnalysisTemplate``
(``argoproj.io/v1alpha1``), so a Kargo user's manifests load unchanged.

Conventions:

- Python attributes are snake_case; the camelCase spelling of the manifests
  is the alias (``repo_url`` <-> ``repoURL``). Both are accepted on input;
  dump with ``by_alias=True`` to get manifest-shaped JSON back.
- Unknown fields are errors (``extra="forbid"``), except inside
  ``metadata``, where Kubernetes bookkeeping (uid, creationTimestamp, ...)
  is tolerated and kept.
- Durations stay strings (``5m0s``) but must parse with
  :func:`parse_duration`.
- Status sub-resources are not modelled: Freightline keeps state in its
  workflows, not in the documents.

Every model round-trips through JSON:
``Model.model_validate(m.model_dump(mode="json", by_alias=True, exclude_none=True)) == m``,
which is how they travel through Temporal's pydantic data converter.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fnmatch
import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from freightline.errors import ConfigError, ExpressionError
from freightline.kargo import expressions
from freightline.kargo.path_selectors import path_selector
from freightline.kargo.semver import parse_constraint

KARGO_API_VERSION: Final = "kargo.akuity.io/v1alpha1"
ARGO_ROLLOUTS_API_VERSION: Final = "argoproj.io/v1alpha1"

# --- durations --------------------------------------------------------------------------------

_DURATION_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both micro signs (U+00B5 and U+03BC)
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> datetime.timedelta:
    """Parse a Go duration (``5m0s``, ``1h``, ``30s``, ``1.5h``, ``250ms``, ``0``).

    Raises ValueError with a message that names the accepted syntax.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string like 5m0s, got {text!r}")
    if text == "0":
        return datetime.timedelta(0)
    pos = 0
    seconds = 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text):
        raise ValueError(
            f'invalid duration "{text}": expected a Go duration such as 5m0s, 1h, 30s or 250ms '
            "(numbers each followed by a unit: h, m, s, ms, us, ns)"
        )
    return datetime.timedelta(seconds=seconds)


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _bare_zero(value: object) -> object:
    # YAML reads `interval: 0` as the number 0; Go's duration syntax allows "0" alone
    # without a unit, so the number means it too (any other number stays refused).
    return "0" if value == 0 and not isinstance(value, bool) else value


Duration = Annotated[str, BeforeValidator(_bare_zero), AfterValidator(_check_duration)]
"""A Go duration string, validated by :func:`parse_duration` (a YAML ``0`` is ``"0"``)."""

# Kubernetes object names (DNS-1123 subdomain), as in Kargo's CRD patterns.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
VAR_NAME_PATTERN = r"^[a-zA-Z_]\w*$"
VarName = Annotated[str, Field(min_length=1, pattern=VAR_NAME_PATTERN)]

# --- base classes ------------------------------------------------------------------------------


class KargoModel(BaseModel):
    """Base of every nested model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )


class ObjectMeta(BaseModel):
    """``metadata``: the fields Freightline reads; other Kubernetes fields are kept as-is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: ResourceName
    namespace: ResourceName | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class FreightMeta(ObjectMeta):
    """Freight ``metadata``: the name is the Freight ID, computed when left out."""

    name: str = ""


class SourceLocation:
    """Where a resource was read from (file, 1-based document index and line).

    ``node`` is the parsed YAML document (ruamel), kept so later checks can
    point at the exact line of a field. Not part of the resource's value: it is
    never serialised and is ignored by equality.
    """

    __slots__ = ("document", "file", "line", "node")

    def __init__(self, file: str, document: int, line: int, node: Any = None) -> None:
        self.file = file
        self.document = document
        self.line = line
        self.node = node

    def __repr__(self) -> str:
        return f"SourceLocation({self.file}:{self.line}, document {self.document})"


class ResourceBase(KargoModel):
    """Base of every top-level kind (``apiVersion``, ``kind``, ``metadata``)."""

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta

    _source: SourceLocation | None = PrivateAttr(default=None)

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        """``metadata.namespace``: the Project this resource belongs to."""
        return self.metadata.namespace

    @property
    def source(self) -> SourceLocation | None:
        """Where this resource was loaded from, if it was loaded from a file."""
        return self._source

    def set_source(self, source: SourceLocation | None) -> None:
        """Record where this resource was loaded from (used by the loader)."""
        self._source = source

    def __eq__(self, other: object) -> bool:
        # Where a document came from is not part of its value: compare fields only.
        if not isinstance(other, BaseModel):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.__dict__ == other.__dict__
            and self.__pydantic_extra__ == other.__pydantic_extra__
        )


# --- checked at apply: constraints and expressions ------------------------------------------

APPLY_CHECKS: Final[dict[str, bool]] = {"apply_checks": True}
"""The validation context under which the checks of expressions, constraints, regular
expressions, path selectors and promotion windows run: ``apply`` (the loader) passes it.

Without it (a resource read back from a workflow through Temporal's data converter, a model
built in code) those checks are skipped: the resource was checked when it was applied, and
re-parsing every expression of every Stage on each deserialisation cost a promotion's plan
most of its CPU. The shape checks (types, names, required fields) run either way."""


def checking(info: ValidationInfo) -> bool:
    """Whether this validation is apply's (see :data:`APPLY_CHECKS`)."""
    context = info.context
    return isinstance(context, dict) and bool(context.get("apply_checks"))


def _constraint(text: str, info: ValidationInfo) -> str:
    # A constraint that does not parse is refused by apply, not at the first discovery.
    if checking(info):
        try:
            parse_constraint(text)
        except ConfigError as err:
            raise ValueError(str(err)) from None
    return text


def _condition(text: str, info: ValidationInfo) -> str:
    if checking(info):
        try:
            expressions.check_condition(text)
        except ExpressionError as err:
            raise ValueError(str(err)) from None
    return text


def _templates(value: Any, info: ValidationInfo) -> Any:
    if checking(info):
        try:
            expressions.check_template(value)
        except ExpressionError as err:
            raise ValueError(str(err)) from None
    return value


def _check_expression(text: str) -> None:
    # A bare expr-lang expression (expressionFilter): parsed at apply, run at discovery.
    if text.strip():
        try:
            expressions.parse(text.strip())
        except ExpressionError as err:
            raise ValueError(str(err)) from None


def _expression(text: str, info: ValidationInfo) -> str:
    if checking(info):
        _check_expression(text)
    return text


def _check_regex(text: str) -> None:
    try:
        re.compile(text)
    except re.error as err:
        raise ValueError(f"invalid regular expression {text!r}: {err}") from None


def _regex(text: str, info: ValidationInfo) -> str:
    if checking(info):
        _check_regex(text)
    return text


def _path_selector(text: str, info: ValidationInfo) -> str:
    if checking(info):
        try:
            path_selector(text)
        except ConfigError as err:
            raise ValueError(str(err)) from None
    return text


SemverConstraint = Annotated[str, AfterValidator(_constraint)]
Expression = Annotated[str, AfterValidator(_expression)]
Regex = Annotated[str, AfterValidator(_regex)]
PathSelector = Annotated[str, AfterValidator(_path_selector)]
Condition = Annotated[str, AfterValidator(_condition)]
TemplatedConfig = Annotated[dict[str, Any], AfterValidator(_templates)]
TemplatedText = Annotated[str, AfterValidator(_templates)]


# --- shared pieces -----------------------------------------------------------------------------


class Var(KargoModel):
    """A named value for ``${{ vars.name }}``."""

    name: VarName
    value: TemplatedText | None = None


class FreightOrigin(KargoModel):
    """Where Freight comes from: at present always a Warehouse."""

    kind: Literal["Warehouse"]
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


class LabelSelectorRequirement(KargoModel):
    """One ``matchExpressions`` entry of a Kubernetes label selector."""

    key: str
    operator: str
    values: list[str] | None = None


class LabelSelector(KargoModel):
    """A Kubernetes label selector."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


# --- promotion steps ---------------------------------------------------------------------------


class PromotionTaskReference(KargoModel):
    """``task``: a step that runs a PromotionTask's steps."""

    name: ResourceName
    kind: Literal["PromotionTask", "ClusterPromotionTask"] = "PromotionTask"


class PromotionStepRetry(KargoModel):
    """``retry``: how long and how often a failing step is retried."""

    timeout: Duration | None = None
    error_threshold: int | None = Field(default=None, ge=0, le=2**31 - 1)


class PromotionStep(KargoModel):
    """One promotion step: ``uses`` a built-in step, or runs a ``task``."""

    uses: str | None = Field(default=None, min_length=1)
    task: PromotionTaskReference | None = None
    as_: str | None = Field(default=None, alias="as")
    if_: Condition | None = Field(default=None, alias="if")
    continue_on_error: bool | None = None
    retry: PromotionStepRetry | None = None
    vars: list[Var] | None = None
    config: TemplatedConfig | None = None

    @model_validator(mode="after")
    def _uses_or_task(self) -> PromotionStep:
        if (self.uses is None) == (self.task is None):
            raise ValueError('a step needs exactly one of "uses" or "task"')
        if self.task is not None and (self.continue_on_error is not None or self.retry):
            raise ValueError('a "task" step cannot set "continueOnError" or "retry"')
        return self


def _no_task(step: PromotionStep) -> PromotionStep:
    if step.task is not None:
        raise ValueError('steps here must use "uses"; a task cannot reference another task')
    return step


LeafPromotionStep = Annotated[PromotionStep, AfterValidator(_no_task)]
"""A step that must be a built-in step (PromotionTask and Promotion steps)."""

# --- Project, ProjectConfig --------------------------------------------------------------------


class AutoRollback(KargoModel):
    """``autoRollback``: roll back automatically on failed promotion or verification.

    As in Kargo, ``onVerification`` absent or empty means ``[Failed]``; ``onPromotion``
    absent means no rollback after a failed promotion."""

    on_promotion: list[Literal["Failed", "Errored"]] | None = Field(default=None, max_length=2)
    on_verification: list[Literal["Failed", "Error"]] | None = Field(default=None, max_length=2)


class ApprovalPolicy(KargoModel):
    """Who must approve a promotion (``wait-for-approval`` config, or a policy's ``approval``).

    ``approvers`` is an allow-list (absent: anyone may approve); ``required``
    distinct approvers are needed; after ``timeout`` (a Go duration; absent:
    wait forever) the promotion fails.
    """

    approvers: list[str] | None = None
    required: int = Field(default=1, ge=1)
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _enough_approvers(self) -> ApprovalPolicy:
        if self.approvers is not None and len(set(self.approvers)) < self.required:
            raise ValueError(
                f"{self.required} approvals required but only "
                f"{len(set(self.approvers))} approvers allowed"
            )
        return self


def _name_pattern(text: str, info: ValidationInfo) -> str:
    # Kargo's name patterns: exact, glob:, regex: or regexp: (compiled here, at apply).
    for prefix in ("regexp:", "regex:"):
        if text.startswith(prefix) and checking(info):
            _check_regex(text.removeprefix(prefix))
    return text


class StageSelector(KargoModel):
    """Selects Stages by exact name (or ``regex:``/``regexp:``/``glob:`` pattern) or labels."""

    name: Annotated[str, AfterValidator(_name_pattern)] | None = None
    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class PromotionPolicy(KargoModel):
    """Whether a Stage (by name or selector) promotes new Freight automatically."""

    stage: ResourceName | None = None
    stage_selector: StageSelector | None = None
    auto_promotion_enabled: bool | None = None
    auto_rollback: AutoRollback | None = None
    approval: ApprovalPolicy | None = None
    """Freightline extension: every promotion into the selected Stages first waits for approval."""

    @model_validator(mode="after")
    def _stage_or_selector(self) -> PromotionPolicy:
        if (self.stage is None) == (self.stage_selector is None):
            raise ValueError('a promotion policy needs exactly one of "stage" or "stageSelector"')
        return self


class PromotionWindow(KargoModel):
    """A recurring window in which promotions are allowed or denied."""

    kind: Literal["Allow", "Deny"]
    name: ResourceName
    dtstart: str | None = None
    dtend: str | None = None
    rrule: str | None = None
    project_selector: StageSelector | None = None
    stage_selector: StageSelector | None = None
    duration: Duration | None = None
    """Freightline extension: each occurrence's length, instead of ``dtend``."""
    time_zone: str | None = None
    """Freightline extension: the zone of a ``dtstart``/``dtend`` without ``TZID=`` (else UTC)."""

    @model_validator(mode="after")
    def _parses(self, info: ValidationInfo) -> PromotionWindow:
        if not checking(info):
            return self
        # Imported here because freightline.kargo.windows builds on these models.
        from freightline.kargo.windows import check_window

        check_window(self)
        return self


class Link(KargoModel):
    """A UI link template for Freight or Stages."""

    title: str = Field(min_length=1)
    url: str = Field(min_length=1)
    description: str | None = None
    if_: str | None = Field(default=None, alias="if")


class SecretReference(KargoModel):
    """``secretRef``: a Secret by name, in the project (the worker's credentials file)."""

    name: ResourceName


class ProviderReceiver(KargoModel):
    """A receiver whose whole configuration is the Secret it checks requests against."""

    secret_ref: SecretReference


class ArtifactoryReceiver(ProviderReceiver):
    """JFrog Artifactory: ``virtualRepoName`` stands for the local repository pushed to."""

    virtual_repo_name: str | None = None


class IndexSelectorRequirement(KargoModel):
    """``matchIndices[]``: ``subscribedURLs`` (Warehouses) or ``pullRequestURL`` (Promotions)."""

    key: str = Field(min_length=1)
    operator: Literal["Equals", "NotEquals"]
    value: str


class IndexSelector(KargoModel):
    match_indices: list[IndexSelectorRequirement] | None = None


class GenericTargetSelection(KargoModel):
    """``targetSelectionCriteria[]``: the name, labels and indices (ANDed) of the targets."""

    kind: Literal["Warehouse", "Promotion"]
    name: str | None = None
    label_selector: LabelSelector | None = None
    index_selector: IndexSelector | None = None


class GenericWebhookAction(KargoModel):
    """One action of a generic receiver (``Refresh`` is Kargo's only one)."""

    action: Literal["Refresh"]
    when_expression: Expression | None = None
    parameters: dict[str, str] | None = None
    target_selection_criteria: list[GenericTargetSelection] | None = None


class GenericReceiver(ProviderReceiver):
    """A receiver for any sender: its ``actions`` pick the targets with expressions."""

    actions: list[GenericWebhookAction] | None = None


RECEIVER_TYPES: Final = (
    "github",
    "gitlab",
    "bitbucket",
    "dockerhub",
    "quay",
    "harbor",
    "artifactory",
    "azure",
    "gitea",
    "generic",
)


class WebhookReceiver(KargoModel):
    """``ProjectConfig.spec.webhookReceivers[]``: Kargo's schema, one provider each."""

    name: ResourceName
    github: ProviderReceiver | None = None
    gitlab: ProviderReceiver | None = None
    bitbucket: ProviderReceiver | None = None
    dockerhub: ProviderReceiver | None = None
    quay: ProviderReceiver | None = None
    harbor: ProviderReceiver | None = None
    artifactory: ArtifactoryReceiver | None = None
    azure: ProviderReceiver | None = None
    gitea: ProviderReceiver | None = None
    generic: GenericReceiver | None = None

    @model_validator(mode="after")
    def _one_provider(self) -> WebhookReceiver:
        given = [kind for kind in RECEIVER_TYPES if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                f"webhook receiver {self.name!r}: exactly one of {', '.join(RECEIVER_TYPES)}"
                f" must be set, got {', '.join(given) or 'none'}"
            )
        return self

    @property
    def receiver_type(self) -> str:
        """``github``, ``gitlab``, ...: the first part of the receiver's URL path."""
        return next(kind for kind in RECEIVER_TYPES if getattr(self, kind) is not None)

    @property
    def config(self) -> ProviderReceiver:
        receiver: ProviderReceiver = getattr(self, self.receiver_type)
        return receiver


class ProjectConfigSpec(KargoModel):
    """``ProjectConfig.spec``."""

    promotion_policies: list[PromotionPolicy] | None = None
    promotion_windows: list[PromotionWindow] | None = None
    freight_links: list[Link] | None = None
    stage_links: list[Link] | None = None
    webhook_receivers: list[WebhookReceiver] | None = None
    approval_keys: list[str] | None = None
    """Freightline extension: Ed25519 public keys (base64 of 32 bytes); when set, an approval
    or rejection is accepted only signed by one of them (``freightline.contracts.approvals``)."""

    @field_validator("approval_keys")
    @classmethod
    def _ed25519_public_keys(cls, keys: list[str] | None) -> list[str] | None:
        for key in keys or ():
            try:
                raw = base64.b64decode(key, validate=True)
            except binascii.Error:
                raw = b""
            if len(raw) != 32:
                raise ValueError(
                    f"{key[:60]!r} is not an Ed25519 public key (base64 of 32 bytes; "
                    "`freightline ui-keygen` makes a pair)"
                )
        return keys

    @model_validator(mode="after")
    def _receiver_names_unique(self) -> ProjectConfigSpec:
        names = [receiver.name for receiver in self.webhook_receivers or ()]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"webhook receiver names must be unique: {', '.join(twice)}")
        return self


class ProjectSpec(KargoModel):
    """Legacy ``Project.spec`` (Kargo before 1.3 kept promotion policies here)."""

    promotion_policies: list[PromotionPolicy] | None = None


class Project(ResourceBase):
    """A namespace for one pipeline."""

    api_version: Literal["kargo.akuity.io/v1alpha1"] = Field(
        default=KARGO_API_VERSION, alias="apiVersion"
    )
    kind: Literal["Project"] = "Project"
    spec: ProjectSpec | None = None


class ProjectConfig(ResourceBase):
    """Project-wide settings: promotion policies (auto-promotion), windows, links."""

    api_version: Literal["kargo.akuity.io/v1alpha1"] = Field(
        default=KARGO_API_VERSION, alias="apiVersion"
    )
    kind: Literal["ProjectConfig"] = "ProjectConfig"
    spec: ProjectConfigSpec = Field(default_factory=ProjectConfigSpec)


class ClusterConfigSpec(KargoModel):
    """``ClusterConfig.spec``: the cluster-scoped webhook receivers."""

    webhook_receivers: list[WebhookReceiver] | None = None


class ClusterConfig(ResourceBase):
    """Kargo's cluster-level configuration (one, named ``cluster``): webhook receivers that
    refresh the subscribed Warehouses of every project."""

    api_version: Literal["kargo.akuity.io/v1alpha1"] = Field(
        default=KARGO_API_VERSION, alias="apiVersion"
    )
    kind: Literal["ClusterConfig"] = "ClusterConfig"
    spec: ClusterConfigSpec = Field(default_factory=ClusterConfigSpec)


# --- Warehouse ---------------------------------------------------------------------------------

IMAGE_REPO_URL_PATTERN = r"^(\w+([\.-]\w+)*(:[\d]+)?/)?(\w+([\.-]\w+)*)(/\w+([\.-]\w+)*)*$"
GIT_REPO_URL_PATTERN = (
    r"(?:^(ssh|https?|file)://(?:([\w-]+)(:(.+))?@)?([\w-]+(?:\.[\w-]+)*)?(?::(\d{1,5}))?(/.*)$)"
    r"|(?:^([\w-]+)@([\w+]+(?:\.[\w-]+)*):(/?.*))$"
)
CHART_REPO_URL_PATTERN = r"^(((https?)|(oci))://)(([\w\d\.\-]+)(:([\d]+)?)?(/.*)*)$"
_BRANCH = r"^[a-zA-Z0-9]([a-zA-Z0-9._\/-]*[a-zA-Z0-9_-])?$"

DiscoveryLimit = Annotated[int, Field(ge=1, le=100)]


class ImageSubscription(KargoModel):
    """A subscription to a container image repository."""

    repo_url: str = Field(alias="repoURL", min_length=1, pattern=IMAGE_REPO_URL_PATTERN)
    image_selection_strategy: Literal["Digest", "Lexical", "NewestBuild", "SemVer"] = "SemVer"
    strict_semvers: StrictBool = True
    constraint: SemverConstraint | None = None
    allow_tags: Regex | None = None
    allow_tags_regexes: list[Regex] | None = None
    ignore_tags: list[str] | None = None
    ignore_tags_regexes: list[Regex] | None = None
    # Kargo's schema says os/arch, but its discovery reads os/arch/variant too (linux/arm/v7).
    platform: str | None = Field(default=None, pattern=r"^\w+/\w+(/\w+)?$")
    insecure_skip_tls_verify: bool | None = Field(default=None, alias="insecureSkipTLSVerify")
    discovery_limit: DiscoveryLimit = 20
    cache_by_tag: bool = False


class GitSubscription(KargoModel):
    """A subscription to a git repository.

    ``file://`` URLs are accepted as well (a Freightline extension, for local
    repositories); Kargo accepts only http(s), ssh and SCP-style URLs.
    """

    repo_url: str = Field(alias="repoURL", min_length=1, pattern=GIT_REPO_URL_PATTERN)
    commit_selection_strategy: Literal["NewestFromBranch", "SemVer", "Lexical", "NewestTag"] = (
        "NewestFromBranch"
    )
    branch: str | None = Field(default=None, min_length=1, max_length=255, pattern=_BRANCH)
    strict_semvers: StrictBool = True
    semver_constraint: SemverConstraint | None = None
    allow_tags: Regex | None = None
    allow_tags_regexes: list[Regex] | None = None
    ignore_tags: list[str] | None = None
    ignore_tags_regexes: list[Regex] | None = None
    expression_filter: Expression | None = None
    insecure_skip_tls_verify: bool | None = Field(default=None, alias="insecureSkipTLSVerify")
    blobless: bool | None = None
    include_paths: list[PathSelector] | None = None
    exclude_paths: list[PathSelector] | None = None
    discovery_limit: DiscoveryLimit = 20
    since: datetime.datetime | None = None


class ChartSubscription(KargoModel):
    """A subscription to a Helm chart (HTTP repository + name, or an ``oci://`` repository)."""

    repo_url: str = Field(alias="repoURL", min_length=1, pattern=CHART_REPO_URL_PATTERN)
    name: str | None = None
    semver_constraint: SemverConstraint | None = None
    discovery_limit: DiscoveryLimit = 20
    insecure_skip_tls_verify: bool | None = Field(default=None, alias="insecureSkipTLSVerify")


class RepoSubscription(KargoModel):
    """One entry of ``subscriptions``: exactly one of ``image``, ``git``, ``chart``."""

    name: str | None = None
    image: ImageSubscription | None = None
    git: GitSubscription | None = None
    chart: ChartSubscription | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RepoSubscription:
        given = [k for k in ("image", "git", "chart") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                'a subscription needs exactly one of "image", "git" or "chart"'
                + (f", got {', '.join(given)}" if given else "")
            )
        return self


class FreightCreationCriteria(KargoModel):
    """An expression new artifacts must satisfy before Freight is created automatically."""

    expression: Condition | None = None


class WarehouseSpec(KargoModel):
    """``Warehouse.spec``."""

    subscriptions: list[RepoSubscription] = Field(min_length=1)
    interval: Duration = "5m0s"
    freight_creation_policy: Literal["Automatic", "Manual"] = "Automatic"
    freight_creation_criteria: FreightCreationCriteria | None = None
    shard: str | None = None


class Warehouse(ResourceBase):
    """A source of Freight: subscriptions polled every ``interval``."""

    api_version: Literal["kargo.akuity.io/v1alpha1"] = Field(
        default=KARGO_API_VERSION, alias="apiVersion"
    )
    kind: Literal["Warehouse"] = "Warehouse"
    spec: WarehouseSpec


# --- PromotionTask -----------------------------------------------------------------------------


class PromotionTaskSpec(KargoModel):
    """``PromotionTask.spec``: vars (with defaults) and built-in steps."""

    vars: list[Var] | None = None
    steps: list[LeafPromotionStep] = Field(min_length=1)


class PromotionTask(ResourceBase):
    """A reusable list of promotion steps."""

    api_version: Literal["kargo.akuity.io/v1alpha1"] = Field(
        default=KARGO_API_VERSION, alias="apiVersion"
    )
    kind: Literal["PromotionTask"] = "PromotionTask"
    spec: PromotionTaskSpec


# --- Stage -------------------------------------------------------------------------------------


class AutoPromotionOptions(KargoModel):
    """How auto-promotion picks among available Freight."""

    selection_policy: Literal["NewestFreight", "MatchUpstream"] | None = None


class FreightSources(KargoModel):
    """Where requested Freight may come from: its Warehouse directly, or upstream Stages."""

    direct: bool | None = None
    stages: list[str] | None = None
    required_soak_time: Duration | None = None
    availability_strategy: Literal["All", "OneOf", ""] | None = None
    auto_promotion_options: AutoPromotionOptions | None = None


class FreightRequest(KargoModel):
    """One ``requestedFreight`` entry."""

    origin: FreightOrigin
    sources: FreightSources


class PromotionTemplateSpec(KargoModel):
    """``promotionTemplate.spec``."""

    vars: list[Var] | None = None
    steps: list[PromotionStep] | None = Field(default=None, min_length=1)


class PromotionTemplate(KargoModel):
    """``promotionTemplate``."""

    spec: PromotionTemplateSpec


class AnalysisTemplateReference(KargoModel):
    """A reference to an AnalysisTemplate run during verification."""

    name: str
    kind: Literal["AnalysisTemplate", "ClusterAnalysisTemplate"] | None = None


class AnalysisRunMetadata(KargoModel):
    """Labels and annotations for the analysis run."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class AnalysisRunArgument(KargoModel):
    """A value passed to the AnalysisTemplates' ``args``."""

    name: str
    value: TemplatedText


class Verification(KargoModel):
    """How Freight is verified in a Stage after promotion."""

    analysis_templates: list[AnalysisTemplateReference] | None = None
    analysis_run_metadata: AnalysisRunMetadata | None = None
    args: list[AnalysisRunArgument] | None = None


class StageTargets(KargoModel):
    """``targets``: label selectors of what a Stage deploys to."""

    selectors: list[LabelSelector]


class StageSpec(KargoModel):
    """``Stage.spec``."""

    requested_freight: list[FreightRequest] = Field(min_length=1)
    promotion_template: PromotionTemplate | None = None
    verification: Verification | None = None
    vars: list[Var] | None = None
    shard: str | None = None
    targets: StageTargets | None = None


class Stage(ResourceBase):
    """A place Freight is promoted to: what it requests, how it is promoted and verified."""

    api_version: Literal["kargo.akuity.io/v1alpha1"] = Field(
        default=KARGO_API_VERSION, alias="apiVersion"
    )
    kind: Literal["Stage"] = "Stage"
    spec: StageSpec


# --- Freight -----------------------------------------------------------------------------------


class Image(KargoModel):
    """One container image version in Freight."""

    repo_url: str | None = Field(default=None, alias="repoURL")
    tag: str | None = None
    digest: str | None = None
    annotations: dict[str, str] | None = None
    subscription_name: str | None = None


class GitCommit(KargoModel):
    """One git commit in Freight."""

    repo_url: str | None = Field(default=None, alias="repoURL")
    id: str | None = None
    branch: str | None = None
    tag: str | None = None
    message: str | None = None
    author: str | None = None
    committer: str | None = None
    subscription_name: str | None = None


class Chart(KargoModel):
    """One Helm chart version in Freight."""

    repo_url: str | None = Field(default=None, alias="repoURL")
    name: str | None = None
    version: str | None = None
    subscription_name: str | None = None


class ArtifactReference(KargoModel):
    """A version of a generic (non image/git/chart) artifact in Freight."""

    artifact_type: str | None = Field(default=None, min_length=1)
    subscription_name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    metadata: dict[str, Any] | None = None


class FreightStatus(KargoModel):
    """Freight's ``status``: what Freightline keeps of it is ``metadata``, the key/value pairs
    the ``set-metadata`` step writes and ``freightMetadata()`` reads (any JSON value)."""

    metadata: dict[str, Any] | None = None


class Freight(ResourceBase):
    """An immutable set of artifact versions; ``metadata.name`` is its ID.

    Its artifacts never change; its ``alias`` (``set-freight-alias``) and ``status.metadata``
    (``set-metadata``) may, in the workflow that holds it."""

    api_version: Literal["kargo.akuity.io/v1alpha1"] = Field(
        default=KARGO_API_VERSION, alias="apiVersion"
    )
    kind: Literal["Freight"] = "Freight"
    metadata: FreightMeta = Field(default_factory=FreightMeta)
    alias: str | None = None
    origin: FreightOrigin
    images: list[Image] | None = None
    commits: list[GitCommit] | None = None
    charts: list[Chart] | None = None
    artifacts: list[ArtifactReference] | None = None
    discovered_at: datetime.datetime | None = None
    status: FreightStatus | None = None

    @property
    def id(self) -> str:
        """The Freight ID (``metadata.name``)."""
        return self.metadata.name

    def computed_id(self) -> str:
        """The ID Kargo's rule gives this Freight's contents (see ``freightline.kargo.freight``)."""
        # Imported here because freightline.kargo.freight builds on these models.
        from freightline.kargo.freight import freight_id

        return freight_id(self)

    def with_computed_name(self) -> Freight:
        """A copy named by its computed ID, with a generated alias when it has none."""
        from freightline.kargo.freight import freight_alias

        new_id = self.computed_id()
        metadata = self.metadata.model_copy(update={"name": new_id})
        copy = self.model_copy(
            update={"metadata": metadata, "alias": self.alias or freight_alias(new_id)}
        )
        copy.set_source(self.source)
        return copy


# --- Promotion ---------------------------------------------------------------------------------


class PromotionSpec(KargoModel):
    """``Promotion.spec``: one attempt to move one Freight into one Stage."""

    stage: ResourceName
    freight: ResourceName | None = None
    origin: FreightOrigin | None = None
    target: str | None = Field(default=None, max_length=253)
    # Kargo's webhook overwrites these with the Stage's; apply refuses them set (compatibility.py).
    vars: list[Var] | None = None
    steps: list[LeafPromotionStep] | None = None

    @model_validator(mode="after")
    def _freight_or_origin(self) -> PromotionSpec:
        if (self.freight is None) == (self.origin is None):
            raise ValueError('a Promotion needs exactly one of "freight" or "origin"')
        return self


class Promotion(ResourceBase):
    """A request to promote Freight into a Stage."""

    api_version: Literal["kargo.akuity.io/v1alpha1"] = Field(
        default=KARGO_API_VERSION, alias="apiVersion"
    )
    kind: Literal["Promotion"] = "Promotion"
    spec: PromotionSpec


# --- AnalysisTemplate (Argo Rollouts) ----------------------------------------------------------


class SecretKeyRef(KargoModel):
    """A key of one of the worker's secrets (Argo Rollouts' ``secretKeyRef``)."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class FieldRef(KargoModel):
    """A field of the Freight or the Stage being verified: ``freight.metadata.name``,
    ``stage.metadata.labels['team']``, ``freight.images[0].tag``."""

    field_path: str = Field(min_length=1)


class ArgumentValueFrom(KargoModel):
    """Where an argument's value comes from: exactly one of a secret or a field."""

    secret_key_ref: SecretKeyRef | None = None
    field_ref: FieldRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ArgumentValueFrom:
        if (self.secret_key_ref is None) == (self.field_ref is None):
            raise ValueError("valueFrom needs exactly one of secretKeyRef or fieldRef")
        return self


class AnalysisArgument(KargoModel):
    """A template argument: a default ``value``, or ``valueFrom`` a secret or a field."""

    name: str
    value: str | None = None
    value_from: ArgumentValueFrom | None = None

    @model_validator(mode="after")
    def _value_or_value_from(self) -> AnalysisArgument:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f'arg "{self.name}": give value or valueFrom, not both')
        return self


class DryRun(KargoModel):
    """A metric (``*``: every metric) measured and reported but never deciding the run."""

    metric_name: str = Field(min_length=1)


class MeasurementRetention(KargoModel):
    """How many of a metric's (``*``: every metric's) latest measurements the run keeps."""

    metric_name: str = Field(min_length=1)
    limit: int = Field(ge=1)


class WebMetricHeader(KargoModel):
    """An HTTP header of a web or prometheus metric (``{{env.FREIGHTLINE_METRIC_*}}`` allowed)."""

    key: str
    value: str


class BasicAuth(KargoModel):
    """``authentication.basicAuth``; the password should be ``{{env.FREIGHTLINE_METRIC_*}}``,
    a reference to the worker's variable, so that it stays out of history."""

    username: str
    password: str


class PrometheusOAuth2(KargoModel):
    """``authentication.oauth2``: an OAuth2 client-credentials grant (RFC 6749 4.4) whose
    access token is sent as ``Authorization: Bearer``. ``clientSecret`` should be a
    reference (an arg from ``valueFrom.secretKeyRef``, or ``{{env.FREIGHTLINE_METRIC_*}}``)."""

    token_url: str
    client_id: str
    client_secret: str
    scopes: list[str] | None = None


class PrometheusSigv4(KargoModel):
    """``authentication.sigv4``: AWS Signature Version 4 (Amazon Managed Prometheus, service
    ``aps``) with the worker's AWS credentials: ``profile``, then ``roleArn`` assumed."""

    region: str | None = None
    profile: str | None = None
    role_arn: str | None = None


class PrometheusAuthentication(KargoModel):
    """``authentication``: Argo Rollouts' ``basicAuth``, ``oauth2`` or ``sigv4`` (one)."""

    basic_auth: BasicAuth | None = None
    oauth2: PrometheusOAuth2 | None = None
    sigv4: PrometheusSigv4 | None = None

    @model_validator(mode="after")
    def _one_scheme(self) -> PrometheusAuthentication:
        chosen = [name for name in ("basic_auth", "oauth2", "sigv4") if getattr(self, name)]
        if len(chosen) > 1:
            raise ValueError(f"give one authentication scheme, not {' and '.join(chosen)}")
        return self


class PrometheusRangeQuery(KargoModel):
    """``rangeQuery``: ``start`` and ``end`` are expressions giving a time (``now() -
    duration("5m")``), ``step`` a duration; every point of every series becomes ``result``."""

    start: str
    end: str
    step: Duration


class PrometheusMetric(KargoModel):
    """A Prometheus query; ``timeout`` is in seconds, as in Argo Rollouts."""

    address: str
    query: str
    timeout: int | None = Field(default=None, ge=1)
    authentication: PrometheusAuthentication | None = None
    headers: list[WebMetricHeader] | None = None
    insecure: bool | None = None
    range_query: PrometheusRangeQuery | None = None


def _json_path(text: str) -> str:
    # Argo Rollouts' web provider reads a Kubernetes JSONPath template: in braces.
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        raise ValueError(
            f"jsonPath {text!r} must be in braces, as Argo Rollouts reads it: {{$.data.value}}"
        )
    return text


class WebMetric(KargoModel):
    """An HTTP request whose JSON response is read with ``jsonPath``."""

    url: str
    method: Literal["GET", "POST", "PUT"] | None = None
    headers: list[WebMetricHeader] | None = None
    body: str | None = None
    json_path: Annotated[str, AfterValidator(_json_path)] | None = None
    timeout_seconds: int | None = Field(default=None, ge=1)
    insecure: bool | None = None


class GraphiteMetric(KargoModel):
    """A Graphite render-API target; the value is the first series' non-null points."""

    address: str
    query: str


class SecretRef(KargoModel):
    """Which of the worker's secrets holds a provider's credentials (Argo's ``secretRef``)."""

    name: str | None = None
    namespaced: bool | None = None


class DatadogMetric(KargoModel):
    """A Datadog metrics query, v1 (``/api/v1/query``) or v2 (``/api/v2/query/scalar``)."""

    interval: Duration = "5m"
    query: str | None = None
    queries: dict[str, str] | None = None
    formula: str | None = None
    api_version: Literal["v1", "v2"] = "v1"
    aggregator: (
        Literal["avg", "min", "max", "sum", "last", "percentile", "mean", "l2norm", "area"] | None
    ) = None
    secret_ref: SecretRef | None = None
    request_timeout: Duration | None = None

    @model_validator(mode="after")
    def _argo_checks(self) -> DatadogMetric:
        # Argo Rollouts' validateIncomingProps, which its CRD cannot express.
        if not self.query and not self.queries:
            raise ValueError("datadog: give either query or queries")
        if self.query and self.queries:
            raise ValueError("datadog: give query or queries, not both")
        if self.api_version == "v1" and not self.query:
            raise ValueError("datadog: apiVersion v1 takes query only (queries need v2)")
        if self.formula and not self.queries:
            raise ValueError("datadog: formula needs queries")
        if not self.formula and self.queries and len(self.queries) > 1:
            raise ValueError("datadog: several queries need a formula")
        if self.api_version == "v1" and self.aggregator:
            raise ValueError("datadog: aggregator needs apiVersion v2")
        if self.request_timeout is not None and parse_duration(self.request_timeout) <= (
            datetime.timedelta(0)
        ):
            raise ValueError("datadog: requestTimeout must be a positive duration, such as 30s")
        return self


class NewRelicMetric(KargoModel):
    """An NRQL query through NerdGraph; ``profile`` names the worker's secret (``newrelic``)."""

    profile: str | None = None
    query: str = Field(min_length=1)
    timeout: int | None = Field(default=None, ge=1)


class InfluxdbMetric(KargoModel):
    """A Flux query; ``profile`` names the worker's secret (``influxdb``)."""

    profile: str | None = None
    query: str = Field(min_length=1)


class WavefrontMetric(KargoModel):
    """A Wavefront query (``/api/v2/chart/api``); the token is the worker's, by address."""

    address: str
    query: str = Field(min_length=1)


class CloudWatchDimension(KargoModel):
    """A CloudWatch metric dimension."""

    name: str
    value: str


class CloudWatchStatMetric(KargoModel):
    """The metric a CloudWatch ``metricStat`` reads."""

    dimensions: list[CloudWatchDimension] | None = None
    metric_name: str | None = None
    namespace: str | None = None


def _int_or_string(value: object) -> object:
    # Argo's IntOrString: `period: "300"` and `period: 300` are the same period.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


PeriodSeconds = Annotated[int, BeforeValidator(_int_or_string), Field(ge=1)]


class CloudWatchMetricStat(KargoModel):
    """``metricStat``: a metric, its period (seconds) and statistic."""

    metric: CloudWatchStatMetric | None = None
    period: PeriodSeconds | None = None
    stat: str | None = None
    unit: str | None = None


class CloudWatchQuery(KargoModel):
    """One ``MetricDataQuery``: a ``metricStat`` or an ``expression`` (CloudWatch itself
    refuses neither or both, as it does for Argo Rollouts: an Error measurement)."""

    id: str = Field(min_length=1)
    expression: str | None = None
    label: str | None = None
    metric_stat: CloudWatchMetricStat | None = None
    period: PeriodSeconds | None = None
    return_data: bool | None = None


class CloudWatchMetric(KargoModel):
    """CloudWatch GetMetricData over the last ``interval`` (default 5m)."""

    interval: Duration | None = None
    metric_data_queries: list[CloudWatchQuery] = Field(min_length=1)


PROVIDER_KINDS: Final[tuple[str, ...]] = (
    "prometheus",
    "web",
    "graphite",
    "datadog",
    "newRelic",
    "cloudWatch",
    "influxdb",
    "wavefront",
)
"""The Argo Rollouts providers Freightline measures with, by their field in ``provider``."""

_ARGO_PROVIDERS: Final = (
    "prometheus",
    "kayenta",
    "web",
    "datadog",
    "wavefront",
    "newRelic",
    "job",
    "cloudWatch",
    "graphite",
    "influxdb",
    "skywalking",
    "plugin",
)
_REFUSED_PROVIDERS: Final = tuple(name for name in _ARGO_PROVIDERS if name not in PROVIDER_KINDS)


class MetricProvider(KargoModel):
    """Where a metric's measurement comes from: exactly one provider."""

    prometheus: PrometheusMetric | None = None
    web: WebMetric | None = None
    graphite: GraphiteMetric | None = None
    datadog: DatadogMetric | None = None
    new_relic: NewRelicMetric | None = Field(default=None, alias="newRelic")
    cloud_watch: CloudWatchMetric | None = Field(default=None, alias="cloudWatch")
    influxdb: InfluxdbMetric | None = None
    wavefront: WavefrontMetric | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in _REFUSED_PROVIDERS:
                if data.get(name) is not None:
                    raise ValueError(
                        f'the "{name}" provider is not supported; use one of '
                        + ", ".join(PROVIDER_KINDS)
                    )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> MetricProvider:
        given = [kind for kind in PROVIDER_KINDS if self.spec_of(kind) is not None]
        if len(given) != 1:
            raise ValueError(
                "a provider needs exactly one of "
                + ", ".join(PROVIDER_KINDS)
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def spec_of(self, kind: str) -> KargoModel | None:
        """The configuration of provider ``kind`` (a name in :data:`PROVIDER_KINDS`), or None."""
        field = {"newRelic": "new_relic", "cloudWatch": "cloud_watch"}.get(kind, kind)
        value: KargoModel | None = getattr(self, field)
        return value

    @property
    def kind(self) -> str:
        """The provider's name as Argo Rollouts spells it (``newRelic``, ``graphite``, ...)."""
        for kind in PROVIDER_KINDS:
            if self.spec_of(kind) is not None:
                return kind
        raise AssertionError("a provider has exactly one kind")  # the validator ensures it

    @property
    def spec(self) -> KargoModel:
        """The configuration of the provider this metric uses."""
        spec = self.spec_of(self.kind)
        assert spec is not None
        return spec


_ARG_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}")


def _metric_condition(text: str, info: ValidationInfo) -> str:
    # Parsed at apply with each {{args.x}} (any {{...}}) standing for a value (its own is known only when
    # the run starts); a number parses inside quotes and out.
    if checking(info):
        _check_expression(_ARG_PLACEHOLDER.sub("0", text))
    return text


MetricCondition = Annotated[str, AfterValidator(_metric_condition)]


class Metric(KargoModel):
    """One metric: how often to measure it and what counts as success or failure."""

    name: str = Field(min_length=1)
    interval: Duration | None = None
    initial_delay: Duration | None = None
    count: int | None = Field(default=None, ge=0)
    success_condition: MetricCondition | None = None
    failure_condition: MetricCondition | None = None
    failure_limit: int = Field(default=0, ge=-1)
    inconclusive_limit: int = Field(default=0, ge=0)
    consecutive_error_limit: int = Field(default=4, ge=0)
    provider: MetricProvider


class AnalysisTemplateSpec(KargoModel):
    """``AnalysisTemplate.spec``."""

    args: list[AnalysisArgument] | None = None
    metrics: list[Metric] = Field(min_length=1)
    dry_run: list[DryRun] | None = None
    measurement_retention: list[MeasurementRetention] | None = None


class AnalysisTemplate(ResourceBase):
    """Argo Rollouts' metric queries with success and failure conditions."""

    api_version: Literal["argoproj.io/v1alpha1"] = Field(
        default=ARGO_ROLLOUTS_API_VERSION, alias="apiVersion"
    )
    kind: Literal["AnalysisTemplate"] = "AnalysisTemplate"
    spec: AnalysisTemplateSpec


class ClusterAnalysisTemplate(ResourceBase):
    """Argo Rollouts' cluster-scoped AnalysisTemplate: one definition every project's Stages
    may name (``kind: ClusterAnalysisTemplate`` in ``verification.analysisTemplates``)."""

    api_version: Literal["argoproj.io/v1alpha1"] = Field(
        default=ARGO_ROLLOUTS_API_VERSION, alias="apiVersion"
    )
    kind: Literal["ClusterAnalysisTemplate"] = "ClusterAnalysisTemplate"
    spec: AnalysisTemplateSpec

    def as_template(self) -> AnalysisTemplate:
        """The same metrics as a namespaced template, to be merged with a Stage's others."""
        return AnalysisTemplate(metadata=self.metadata, spec=self.spec)


# --- ConfigMap ---------------------------------------------------------------------------------


class ConfigMap(ResourceBase):
    """A Kubernetes ConfigMap applied to the project: what ``configMap(name)`` reads in
    promotion steps. Non-secret by definition (its values reach promotion histories, as any
    rendered step config does); a Secret is refused by ``apply``."""

    api_version: Literal["v1"] = Field(default="v1", alias="apiVersion")
    kind: Literal["ConfigMap"] = "ConfigMap"
    data: dict[str, str] | None = None
    immutable: bool | None = None


# --- the union and the registry ----------------------------------------------------------------

Resource = Annotated[
    Project
    | ProjectConfig
    | Warehouse
    | Stage
    | PromotionTask
    | Freight
    | Promotion
    | AnalysisTemplate
    | ClusterAnalysisTemplate
    | ClusterConfig
    | ConfigMap,
    Field(discriminator="kind"),
]
"""Any top-level kind, discriminated by ``kind``."""

RESOURCE_KINDS: dict[str, type[ResourceBase]] = {
    "Project": Project,
    "ProjectConfig": ProjectConfig,
    "Warehouse": Warehouse,
    "Stage": Stage,
    "PromotionTask": PromotionTask,
    "Freight": Freight,
    "Promotion": Promotion,
    "AnalysisTemplate": AnalysisTemplate,
    "ClusterAnalysisTemplate": ClusterAnalysisTemplate,
    "ClusterConfig": ClusterConfig,
    "ConfigMap": ConfigMap,
}
"""Model class by ``kind``."""

API_VERSIONS: dict[str, str] = {
    kind: model.model_fields["api_version"].default for kind, model in RESOURCE_KINDS.items()
}
"""The ``apiVersion`` each kind is accepted under."""

CLUSTER_KINDS: frozenset[str] = frozenset({"ClusterAnalysisTemplate", "ClusterConfig"})
"""Kinds shared by every project (no ``metadata.namespace``): kept by the Cluster workflow."""
CLUSTER_CONFIG_NAME = "cluster"
"""The one ClusterConfig's name, as Kargo requires it."""


class ClusterResources(BaseModel):
    """The cluster-scoped resources every project may use, by kind and then by name."""

    model_config = ConfigDict(extra="forbid")

    analysis_templates: dict[str, ClusterAnalysisTemplate] = Field(default_factory=dict)
    cluster_config: ClusterConfig | None = None


class ProjectResources(BaseModel):
    """Everything one Project is made of, by kind and then by name."""

    model_config = ConfigDict(extra="forbid")

    name: str
    project: Project | None = None
    project_config: ProjectConfig | None = None
    warehouses: dict[str, Warehouse] = Field(default_factory=dict)
    stages: dict[str, Stage] = Field(default_factory=dict)
    promotion_tasks: dict[str, PromotionTask] = Field(default_factory=dict)
    freight: dict[str, Freight] = Field(default_factory=dict)
    promotions: dict[str, Promotion] = Field(default_factory=dict)
    analysis_templates: dict[str, AnalysisTemplate] = Field(default_factory=dict)
    config_maps: dict[str, ConfigMap] = Field(default_factory=dict)

    def policy_for(self, stage: str) -> PromotionPolicy | None:
        """The ProjectConfig's (or legacy Project's) promotion policy for ``stage``: the first
        that selects it, as in Kargo."""
        policies: list[PromotionPolicy] = []
        if self.project_config is not None:
            policies.extend(self.project_config.spec.promotion_policies or ())
        if self.project is not None and self.project.spec is not None:
            policies.extend(self.project.spec.promotion_policies or ())
        stage_resource = self.stages.get(stage)
        labels = (stage_resource.metadata.labels if stage_resource else None) or {}
        for policy in policies:
            if policy.stage is not None:
                selected = policy.stage == stage
            elif policy.stage_selector is not None:
                selected = _selects(policy.stage_selector, stage, labels)
            else:
                continue
            if selected:
                return policy
        return None

    def auto_promotion_enabled(self, stage: str) -> bool:
        """Whether the project's policies auto-promote ``stage`` (no policy: no, as in Kargo)."""
        policy = self.policy_for(stage)
        return bool(policy and policy.auto_promotion_enabled)

    def auto_rollback_on_verification(self, stage: str) -> tuple[Literal["Failed", "Error"], ...]:
        """The verification outcomes (Failed, Error) that roll ``stage`` back (Kargo
        Enterprise's ``autoRollback`` in its promotion policy; empty means ``[Failed]``)."""
        policy = self.policy_for(stage)
        if policy is None or policy.auto_rollback is None:
            return ()
        return tuple(policy.auto_rollback.on_verification or ("Failed",))

    def auto_rollback_on_promotion(self, stage: str) -> tuple[Literal["Failed", "Errored"], ...]:
        """The promotion outcomes (Failed, Errored) after which ``stage`` returns to its last
        verified Freight (``autoRollback.onPromotion``; absent: none)."""
        policy = self.policy_for(stage)
        if policy is None or policy.auto_rollback is None:
            return ()
        return tuple(policy.auto_rollback.on_promotion or ())


def _selects(selector: StageSelector, stage: str, labels: dict[str, str]) -> bool:
    """Kargo's stage selector: a name (exact, ``regex:`` or ``glob:``) and/or labels."""
    if selector.name is not None:
        pattern = selector.name
        if pattern.startswith(("regex:", "regexp:")):
            if re.search(pattern.partition(":")[2], stage) is None:
                return False
        elif pattern.startswith("glob:"):
            if not fnmatch.fnmatchcase(stage, pattern.removeprefix("glob:")):
                return False
        elif pattern != stage:
            return False
    return labels_match(selector.match_labels, selector.match_expressions, labels)


def labels_match(
    match_labels: dict[str, str] | None,
    match_expressions: list[LabelSelectorRequirement] | None,
    labels: dict[str, str],
) -> bool:
    """Whether ``labels`` satisfy a Kubernetes label selector's two parts."""
    for key, value in (match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in match_expressions or ():
        present = requirement.key in labels
        values = requirement.values or []
        match requirement.operator:
            case "In":
                ok = present and labels[requirement.key] in values
            case "NotIn":
                ok = not present or labels[requirement.key] not in values
            case "Exists":
                ok = present
            case "DoesNotExist":
                ok = not present
            case _:
                ok = False
        if not ok:
            return False
    return True
