"""Shared pieces of the kubernaut.ai/v1alpha1 models: base class, metadata, conditions."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

GROUP = "kubernaut.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _serialize_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Time = Annotated[datetime, PlainSerializer(_serialize_time, return_type=str)]
"""A Kubernetes metav1.Time: RFC 3339, UTC, second precision on the wire."""


class KubeModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are kept out, not fatal."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict the API server expects (aliases, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ExecutionEngine(StrEnum):
    """What runs a workflow: a Tekton PipelineRun from a bundle, or a Kubernetes Job from an image."""

    TEKTON = "tekton"
    JOB = "job"


GO_DURATION_PATTERN = r"^([0-9]+(\.[0-9]*)?(ns|us|ms|s|m|h))+$"
"""A positive Go duration such as `90s`, `10m` or `1h30m`."""


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KubeModel):
    """A standard Kubernetes condition."""

    type: str = Field(description="Type of the condition, in CamelCase.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One-word CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details of the last transition.")
    last_transition_time: Time | None = Field(
        default=None, description="When the status last changed from one value to another."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set from."
    )


class ObjectReference(KubeModel):
    """A reference to another Kubernetes object."""

    api_version: str = Field(default="", description="API version of the referent.")
    kind: str = Field(default="", description="Kind of the referent.")
    name: str = Field(default="", description="Name of the referent.")
    namespace: str = Field(default="", description="Namespace of the referent.")
    uid: str = Field(default="", description="UID of the referent.")


class OwnerReference(KubeModel):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(KubeModel):
    """The subset of metav1.ObjectMeta the controllers read and write."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int | None = None
    creation_timestamp: Time | None = None
    deletion_timestamp: Time | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    owner_references: list[OwnerReference] = Field(default_factory=list)


class PrinterColumn(KubeModel):
    name: str
    type: str
    json_path: str = Field(validation_alias=AliasChoices("jsonPath", "json_path"))
    description: str = ""
    priority: int = 0


class CustomResource(KubeModel):
    """Base of every kind: apiVersion, kind, metadata, spec and status; CRD facts as class vars."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SINGULAR: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    NAMESPACED: ClassVar[bool] = True
    HAS_STATUS: ClassVar[bool] = True
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = ()
    SELECTABLE_FIELDS: ClassVar[tuple[str, ...]] = ()
    DESCRIPTION: ClassVar[str] = ""

    api_version: str = API_VERSION
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Self:
        return cls.model_validate(body)

    @property
    def key(self) -> str:
        """`namespace/name` (or `name` when cluster-scoped): how the controllers queue objects."""
        meta = self.metadata
        return f"{meta.namespace}/{meta.name}" if meta.namespace else meta.name


def age_column() -> PrinterColumn:
    return PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp")
