"""Workflow selection: which catalog workflow a RemediationRequest runs, with which parameters.

An explicit `spec.workflowRef` wins; otherwise the catalog entries whose match criteria all hold
compete on priority (ties by name). The result is checked before anything runs: a workflow
without a bundle, or a parameter name that is not UPPER_SNAKE_CASE, is refused here.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from kubernaut.api.v1alpha1 import RemediationRequest, RemediationWorkflow
from kubernaut.api.v1alpha1.common import ExecutionEngine
from kubernaut.api.v1alpha1.remediationrequest import RequestedWorkflowRef
from kubernaut.api.v1alpha1.remediationrequest import SelectedWorkflow as SelectedWorkflowStatus

SOURCE_WORKFLOW_REF = "spec.workflowRef"
CATALOG_SOURCE_PREFIX = "catalog:"
_PARAMETER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class SelectedWorkflow:
    workflow_id: str
    version: str
    container_image: str
    container_digest: str | None
    parameters: dict[str, str] = field(default_factory=dict)
    source: str = ""
    engine: ExecutionEngine = ExecutionEngine.TEKTON
    command: tuple[str, ...] = ()  # engine job: the container's command
    active_deadline: str | None = None  # engine job
    requires_approval: bool = False
    dry_run: bool = False

    def to_status(self) -> SelectedWorkflowStatus:
        """The form recorded in the request's `status.selectedWorkflow`."""
        return SelectedWorkflowStatus(
            workflow_id=self.workflow_id,
            version=self.version,
            container_image=self.container_image,
            container_digest=self.container_digest,
            parameters=dict(self.parameters) or None,
            source=self.source,
        )


@dataclass(frozen=True)
class SelectionFailure:
    message: str


def _rank(entry: RemediationWorkflow) -> tuple[int, str]:
    # min() of this key: highest priority first, then name ascending.
    return (-entry.spec.priority, entry.metadata.name)


def _matches(entry: RemediationWorkflow, rr: RemediationRequest) -> bool:
    match = entry.spec.match
    if match is None:
        return True
    spec = rr.spec
    if match.signal_names and spec.signal_name not in match.signal_names:
        return False
    if match.severities and spec.severity.value not in match.severities:
        return False
    if match.target_kinds and spec.target_resource.kind not in match.target_kinds:
        return False
    labels = spec.signal_labels or {}
    return all(labels.get(key) == value for key, value in (match.labels or {}).items())


def _from_catalog(entry: RemediationWorkflow, source: str, ref: RequestedWorkflowRef | None) -> SelectedWorkflow:
    spec = entry.spec
    parameters = dict(spec.parameters or {})
    image = spec.container_image
    digest = spec.container_digest
    execution = spec.execution
    if ref is not None:
        parameters.update(ref.parameters or {})
        if ref.container_image and ref.container_image != image:
            # The catalog's digest describes the catalog's bundle, not the one the request names.
            image, digest = ref.container_image, None
    return SelectedWorkflow(
        workflow_id=spec.workflow_id,
        version=spec.version,
        container_image=image,
        container_digest=digest,
        parameters=parameters,
        source=source,
        engine=execution.engine if execution else ExecutionEngine.TEKTON,
        command=tuple(execution.command or ()) if execution else (),
        active_deadline=execution.active_deadline if execution else None,
        requires_approval=spec.requires_approval,
        dry_run=spec.dry_run,
    )


def _select_by_ref(
    ref: RequestedWorkflowRef, catalog: Sequence[RemediationWorkflow]
) -> SelectedWorkflow | SelectionFailure:
    entries = [
        entry
        for entry in catalog
        if entry.spec.workflow_id == ref.workflow_id and (not ref.version or entry.spec.version == ref.version)
    ]
    if entries:
        return _from_catalog(min(entries, key=_rank), SOURCE_WORKFLOW_REF, ref)
    if ref.version and ref.container_image:
        return SelectedWorkflow(
            workflow_id=ref.workflow_id,
            version=ref.version,
            container_image=ref.container_image,
            container_digest=None,
            parameters=dict(ref.parameters or {}),
            source=SOURCE_WORKFLOW_REF,
        )
    wanted = f" (version {ref.version})" if ref.version else ""
    return SelectionFailure(
        f"workflow '{ref.workflow_id}' is not in the catalog{wanted}, and spec.workflowRef does not "
        "give both version and containerImage to run it without one"
    )


def _select_by_match(
    rr: RemediationRequest, catalog: Sequence[RemediationWorkflow]
) -> SelectedWorkflow | SelectionFailure:
    candidates = [entry for entry in catalog if _matches(entry, rr)]
    if not candidates:
        spec = rr.spec
        return SelectionFailure(
            f"no workflow in the catalog matches signal '{spec.signal_name}' "
            f"(severity {spec.severity.value}, target kind {spec.target_resource.kind})"
        )
    best = min(candidates, key=_rank)
    return _from_catalog(best, CATALOG_SOURCE_PREFIX + best.metadata.name, None)


def _validate(selected: SelectedWorkflow) -> SelectedWorkflow | SelectionFailure:
    if not selected.container_image:
        return SelectionFailure(
            f"workflow '{selected.workflow_id}' has no bundle: containerImage is empty in the catalog and the request"
        )
    for key in sorted(selected.parameters):
        if not _PARAMETER_NAME.match(key):
            return SelectionFailure(
                f"workflow '{selected.workflow_id}' parameter '{key}' is not UPPER_SNAKE_CASE "
                "(a capital letter, then capitals, digits or '_')"
            )
    return selected


def select_workflow(
    rr: RemediationRequest, catalog: Sequence[RemediationWorkflow]
) -> SelectedWorkflow | SelectionFailure:
    """The workflow rr runs: its explicit workflowRef, else the best matching catalog entry."""
    ref = rr.spec.workflow_ref
    chosen = _select_by_ref(ref, catalog) if ref is not None else _select_by_match(rr, catalog)
    return chosen if isinstance(chosen, SelectionFailure) else _validate(chosen)
