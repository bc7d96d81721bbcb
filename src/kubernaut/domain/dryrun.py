"""Dry run: whether a request only validates what it would run, and what that says about it.

Three levels, any of which makes a dry run: the global `dryRun` setting, the workflow's
`spec.dryRun`, and the request's annotation `kubernaut.ai/dry-run: "true"`. A dry run passes
selection, routing and approval like a real one; instead of the execution, the orchestrator has the
API server validate it (a server-side dry-run create of the WorkflowExecution and of the PipelineRun
or Job the executor would render). It takes no lock and is neither a success nor a failure in any
routing history.
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernaut.api.v1alpha1.remediationrequest import Outcome, RemediationPhase, RemediationRequest
from kubernaut.domain.selection import SelectedWorkflow

ANNOTATION_DRY_RUN = "kubernaut.ai/dry-run"
HOLD_PERIOD = timedelta(hours=1)
"""The default `dryRun.holdPeriod`."""


def decide_dry_run(rr: RemediationRequest, selected: SelectedWorkflow, globally: bool) -> str:
    """Why rr is a dry run; "" when it runs for real."""
    if globally:
        return "dryRun is set globally"
    if selected.dry_run:
        return f"workflow {selected.workflow_id} sets dryRun"
    if rr.metadata.annotations.get(ANNOTATION_DRY_RUN, "").strip().lower() == "true":
        return f"the request is annotated {ANNOTATION_DRY_RUN}=true"
    return ""


def is_dry_run_outcome(rr: RemediationRequest) -> bool:
    """A finished dry run: it changed nothing, so routing histories skip it."""
    return rr.status.overall_phase == RemediationPhase.COMPLETED and rr.status.outcome == Outcome.DRY_RUN


def is_held(body: Mapping[str, Any], now: datetime, hold_period: timedelta) -> bool:
    """A dry run that ended less than `hold_period` ago: the gateway folds repeats of its signal into
    it instead of creating the next request, which would only dry-run again (and again)."""
    status = body.get("status") or {}
    if status.get("overallPhase") != RemediationPhase.COMPLETED.value or status.get("outcome") != Outcome.DRY_RUN.value:
        return False
    completed = status.get("completedAt")
    if not isinstance(completed, str):
        return False
    try:
        ended = datetime.fromisoformat(completed.replace("Z", "+00:00"))
    except ValueError:
        return False
    return now < (ended if ended.tzinfo else ended.replace(tzinfo=UTC)) + hold_period
