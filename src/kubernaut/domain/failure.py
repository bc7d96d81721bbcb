"""Failure analysis of a PipelineRun: reason, failed task, execution vs pre-execution, summary."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernaut.api.v1alpha1.workflowexecution import FailureDetails, FailureReason
from kubernaut.domain.duration import format_go_duration

_RECOMMENDATIONS = {
    FailureReason.OOM_KILLED: "Recommendation: raise the memory limits of the workflow's tasks, or "
    "choose a workflow variant that needs less memory.",
    FailureReason.FORBIDDEN: "Recommendation: grant the workflow service account the RBAC permissions "
    "it needs, or choose another workflow.",
    FailureReason.DEADLINE_EXCEEDED: "Recommendation: raise the pipeline timeout, or use a faster "
    "variant of the workflow.",
    FailureReason.IMAGE_PULL_BACK_OFF: "Recommendation: check the workflow bundle and task images exist "
    "and that the pull credentials are valid.",
}
_PRE_EXECUTION_REASONS = frozenset(
    {FailureReason.IMAGE_PULL_BACK_OFF, FailureReason.CONFIGURATION_ERROR, FailureReason.RESOURCE_EXHAUSTED}
)
_EXECUTION_REASONS_WITHOUT_START = frozenset(
    {FailureReason.OOM_KILLED, FailureReason.DEADLINE_EXCEEDED, FailureReason.FORBIDDEN, FailureReason.TASK_FAILED}
)


def find_succeeded_condition(obj: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The `Succeeded` condition of a Tekton PipelineRun or TaskRun, if any."""
    if not obj:
        return None
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == "Succeeded"), None)


def classify_failure_reason(reason: str, message: str) -> FailureReason:
    """The first matching row of the classification table wins (plain substring tests)."""
    r, m = (reason or "").lower(), (message or "").lower()
    if "oomkilled" in m or "oom" in m:
        return FailureReason.OOM_KILLED
    if "timeout" in r or "timeout" in m or "deadline" in m:
        return FailureReason.DEADLINE_EXCEEDED
    if "forbidden" in m or "rbac" in m or "permission denied" in m:
        return FailureReason.FORBIDDEN
    if "quota" in m or "resource exhausted" in m:
        return FailureReason.RESOURCE_EXHAUSTED
    if "imagepullbackoff" in m or "image pull" in m:
        return FailureReason.IMAGE_PULL_BACK_OFF
    if "invalid" in m or "configuration" in m:
        return FailureReason.CONFIGURATION_ERROR
    if "taskfailed" in r or ("task" in m and "failed" in m):
        return FailureReason.TASK_FAILED
    return FailureReason.UNKNOWN


@dataclass(frozen=True)
class FailedTask:
    index: int = 0
    name: str = ""
    exit_code: int | None = None


def find_failed_task(
    child_references: Sequence[Mapping[str, Any]], taskruns: Mapping[str, Mapping[str, Any]]
) -> FailedTask:
    """The first TaskRun child (in childReferences order) whose Succeeded condition is False."""
    for index, ref in enumerate(child_references):
        if ref.get("kind") != "TaskRun":
            continue
        taskrun = taskruns.get(str(ref.get("name", "")))
        condition = find_succeeded_condition(taskrun)
        if taskrun is None or condition is None or condition.get("status") != "False":
            continue
        return FailedTask(index=index, name=str(ref.get("name", "")), exit_code=_first_nonzero_exit(taskrun))
    return FailedTask()


def _first_nonzero_exit(taskrun: Mapping[str, Any]) -> int | None:
    for step in (taskrun.get("status") or {}).get("steps") or []:
        terminated = step.get("terminated") if isinstance(step, Mapping) else None
        if isinstance(terminated, Mapping):
            code = terminated.get("exitCode")
            if isinstance(code, int) and not isinstance(code, bool) and code != 0:
                return code
    return None


def decide_was_execution_failure(pipelinerun: Mapping[str, Any] | None, reason: FailureReason) -> bool:
    """True when the workflow ran (and may have changed the cluster)."""
    if pipelinerun is None:
        return False
    status = pipelinerun.get("status") or {}
    if status.get("startTime"):
        return reason not in _PRE_EXECUTION_REASONS
    if status.get("childReferences"):
        return True
    return reason in _EXECUTION_REASONS_WITHOUT_START


def build_summary(workflow_id: str, target: str, reason: FailureReason, message: str, failed_after: str) -> str:
    lines = [f"Workflow '{workflow_id}' failed on target '{target}'.", f"Reason: {reason.value}"]
    if message:
        lines.append(f"Error: {message}")
    if failed_after:
        lines.append(f"Failed after: {failed_after}")
    if reason in _RECOMMENDATIONS:
        lines.append(_RECOMMENDATIONS[reason])
    return "".join(line + "\n" for line in lines)


def build_execution_failure(
    *,
    pipelinerun: Mapping[str, Any] | None,
    taskruns: Mapping[str, Mapping[str, Any]],
    start_time: datetime | None,
    now: datetime,
    workflow_id: str,
    target: str,
    kind: str = "PipelineRun",
) -> FailureDetails:
    """Failure details of a run that reached Tekton (or whose run, of any `kind`, vanished: `pipelinerun=None`)."""
    failed_after = format_go_duration(now - start_time) if start_time else ""
    if pipelinerun is None:
        reason, message, task = FailureReason.UNKNOWN, f"{kind} was deleted externally", FailedTask()
    else:
        condition = find_succeeded_condition(pipelinerun) or {}
        message = str(condition.get("message") or "")
        reason = classify_failure_reason(str(condition.get("reason") or ""), message)
        refs = [r for r in (pipelinerun.get("status") or {}).get("childReferences") or [] if isinstance(r, Mapping)]
        task = find_failed_task(refs, taskruns)
    return FailureDetails(
        failed_task_index=task.index,
        failed_task_name=task.name,
        reason=reason,
        message=message,
        exit_code=task.exit_code,
        failed_at=now,
        execution_time_before_failure=failed_after,
        natural_language_summary=build_summary(workflow_id, target, reason, message, failed_after),
        was_execution_failure=decide_was_execution_failure(pipelinerun, reason) or None,
    )


def build_pre_execution_failure(
    *, reason: FailureReason, message: str, now: datetime, workflow_id: str, target: str
) -> FailureDetails:
    """Failure details of a run that never started (validation, creation error, race)."""
    return FailureDetails(
        failed_task_index=0,
        failed_task_name="",
        reason=reason,
        message=message,
        failed_at=now,
        execution_time_before_failure="",
        natural_language_summary=build_summary(workflow_id, target, reason, message, ""),
        was_execution_failure=None,
    )
