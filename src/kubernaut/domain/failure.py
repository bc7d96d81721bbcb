"""Failure analysis of a PipelineRun: reason, failed task, execution vs pre-execution, summary."""

import re
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


CANCELLED = "Cancelled"
"""The PipelineRun's reason once someone set its `spec.status` to `Cancelled`."""

# Tekton's own reasons, read before any message: the PipelineRun's, then its failed TaskRun's.
_PIPELINERUN_REASONS = {
    "PipelineRunTimeout": FailureReason.DEADLINE_EXCEEDED,
    "CouldntGetPipeline": FailureReason.CONFIGURATION_ERROR,
    "CouldntGetTask": FailureReason.CONFIGURATION_ERROR,
    "PipelineValidationFailed": FailureReason.CONFIGURATION_ERROR,
    "PipelineInvalidGraph": FailureReason.CONFIGURATION_ERROR,
    "ParameterMissing": FailureReason.CONFIGURATION_ERROR,
    "ParameterTypeMismatch": FailureReason.CONFIGURATION_ERROR,
    "InvalidTaskResultReference": FailureReason.CONFIGURATION_ERROR,
    "InvalidWorkspaceBindings": FailureReason.CONFIGURATION_ERROR,
}
_TASKRUN_REASONS = {
    "TaskRunTimeout": FailureReason.DEADLINE_EXCEEDED,
    "TaskRunImagePullFailed": FailureReason.IMAGE_PULL_BACK_OFF,
    "CreateContainerConfigError": FailureReason.CONFIGURATION_ERROR,
    "TaskRunValidationFailed": FailureReason.CONFIGURATION_ERROR,
    "CouldntGetTask": FailureReason.CONFIGURATION_ERROR,
    "ExceededResourceQuota": FailureReason.RESOURCE_EXHAUSTED,
    "ExceededNodeResources": FailureReason.RESOURCE_EXHAUSTED,
    "PodCreationFailed": FailureReason.CONFIGURATION_ERROR,  # unless its message says quota or forbidden
}
# The message table, last: whole words only ("boom" or "zoom" is no OOM), the first matching row wins.
_FORBIDDEN = re.compile(r"\b(forbidden|rbac|permission denied)\b")
_QUOTA = re.compile(r"\b(quota|resource exhausted)\b")
_IMAGE_PULL = re.compile(r"\b(imagepullbackoff|errimagepull|image pull)\b")
_MESSAGE_ROWS = (
    (re.compile(r"\b(oomkilled|oom|out of memory)\b"), FailureReason.OOM_KILLED),
    (re.compile(r"\b(timeout|timed out|deadline)\b"), FailureReason.DEADLINE_EXCEEDED),
    (_FORBIDDEN, FailureReason.FORBIDDEN),
    (_QUOTA, FailureReason.RESOURCE_EXHAUSTED),
    (_IMAGE_PULL, FailureReason.IMAGE_PULL_BACK_OFF),
    (re.compile(r"\b(invalid|configuration)\b"), FailureReason.CONFIGURATION_ERROR),
    (re.compile(r"\btasks?\b.*\bfailed\b"), FailureReason.TASK_FAILED),
)


def classify_failure_reason(reason: str, message: str) -> FailureReason:
    """The message table (a reason naming a timeout counts too; `TaskFailed` is a task failure)."""
    r, m = (reason or "").lower(), (message or "").lower()
    for pattern, classified in _MESSAGE_ROWS:
        if pattern.search(m) or (classified is FailureReason.DEADLINE_EXCEEDED and "timeout" in r):
            return classified
    return FailureReason.TASK_FAILED if r == "taskfailed" else FailureReason.UNKNOWN


def classify_run_failure(
    pipelinerun_condition: Mapping[str, Any], failed_taskrun: Mapping[str, Any] | None
) -> FailureReason:
    """Structured fields before any message: the PipelineRun's reason, the failed TaskRun's reason,
    its steps' terminated states; then the messages (the TaskRun's, the PipelineRun's)."""
    pr_reason = str(pipelinerun_condition.get("reason") or "")
    pr_message = str(pipelinerun_condition.get("message") or "").lower()
    if pr_reason == "CouldntGetPipeline" and _IMAGE_PULL.search(pr_message):
        return FailureReason.IMAGE_PULL_BACK_OFF  # the bundle exists but cannot be pulled (yet)
    if pr_reason in _PIPELINERUN_REASONS:
        return _PIPELINERUN_REASONS[pr_reason]
    tr_condition = find_succeeded_condition(failed_taskrun) or {}
    tr_reason, tr_message = str(tr_condition.get("reason") or ""), str(tr_condition.get("message") or "")
    if tr_reason == "PodCreationFailed":  # a quota refusal reads "is forbidden: exceeded quota"
        for pattern, said in (_QUOTA, FailureReason.RESOURCE_EXHAUSTED), (_FORBIDDEN, FailureReason.FORBIDDEN):
            if pattern.search(tr_message.lower()):
                return said
    if tr_reason in _TASKRUN_REASONS:
        return _TASKRUN_REASONS[tr_reason]
    terminated = [step["terminated"] for step in _steps(failed_taskrun) if isinstance(step.get("terminated"), Mapping)]
    if any(state.get("reason") == "OOMKilled" for state in terminated):
        return FailureReason.OOM_KILLED
    if failed_taskrun is not None and _first_nonzero_exit(failed_taskrun) is not None:
        return FailureReason.TASK_FAILED
    for reason, message in ((tr_reason, tr_message), (pr_reason, pr_message)):
        classified = classify_failure_reason(reason, message)
        if classified is not FailureReason.UNKNOWN:
            return classified
    return FailureReason.TASK_FAILED if tr_reason == "Failed" else FailureReason.UNKNOWN


def _steps(taskrun: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    steps = ((taskrun or {}).get("status") or {}).get("steps") or []
    return [s for s in steps if isinstance(s, Mapping)]


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


_NEVER_RAN = frozenset({"TaskRunImagePullFailed"})
"""Tekton marks every step of a pod it stops as terminated (exit code 1), also the steps whose image
was never pulled; with these termination reasons the step's container never ran."""


def _step_ran(step: Mapping[str, Any]) -> bool:
    if "running" in step:
        return True
    terminated = step.get("terminated")
    if not isinstance(terminated, Mapping):
        return False
    return terminated.get("reason") not in _NEVER_RAN and step.get("terminationReason") not in _NEVER_RAN


def _first_nonzero_exit(taskrun: Mapping[str, Any]) -> int | None:
    for step in _steps(taskrun):
        terminated = step.get("terminated") if _step_ran(step) else None
        if isinstance(terminated, Mapping):
            code = terminated.get("exitCode")
            if isinstance(code, int) and not isinstance(code, bool) and code != 0:
                return code
    return None


def decide_was_execution_failure(
    pipelinerun: Mapping[str, Any] | None,
    reason: FailureReason,
    taskruns: Mapping[str, Mapping[str, Any]] | None = None,
) -> bool:
    """True when the workflow ran (and may have changed the cluster): with every TaskRun of the run
    read, exactly when a step container of one started; else judged from the run and the reason."""
    if pipelinerun is None:
        return False
    status = pipelinerun.get("status") or {}
    children = [
        str(r.get("name"))
        for r in status.get("childReferences") or []
        if isinstance(r, Mapping) and r.get("kind") == "TaskRun"
    ]
    if children and taskruns is not None and all(name in taskruns for name in children):
        return any(_step_ran(step) for name in children for step in _steps(taskruns[name]))
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
    elif (condition := find_succeeded_condition(pipelinerun) or {}).get("reason") == CANCELLED:
        # Stopped by someone, not failed: no task failed (Tekton cancels its TaskRuns after the run).
        reason, message, task = FailureReason.UNKNOWN, str(condition.get("message") or ""), FailedTask()
    else:
        refs = [r for r in (pipelinerun.get("status") or {}).get("childReferences") or [] if isinstance(r, Mapping)]
        task = find_failed_task(refs, taskruns)
        failed_taskrun = taskruns.get(task.name) if task.name else None
        reason = classify_run_failure(condition, failed_taskrun)
        # The failed TaskRun says what went wrong; the PipelineRun only counts its tasks.
        message = str((find_succeeded_condition(failed_taskrun) or {}).get("message") or condition.get("message") or "")
    return FailureDetails(
        failed_task_index=task.index,
        failed_task_name=task.name,
        reason=reason,
        message=message,
        exit_code=task.exit_code,
        failed_at=now,
        execution_time_before_failure=failed_after,
        natural_language_summary=build_summary(workflow_id, target, reason, message, failed_after),
        was_execution_failure=decide_was_execution_failure(pipelinerun, reason, taskruns) or None,
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
