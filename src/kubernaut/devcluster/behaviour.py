"""What the Tekton stand-in plays for a PipelineRun, and the Tekton-shaped status it writes. Pure.

A stand-in bundle names its behaviour:

    kubernaut.local/standin/<outcome>:<tag>[@<digest>]

    succeed:   [<N>tasks-]<duration>               N tasks, all succeed
    fail:      task<I>of<N>[-exit<C>]-<duration>   task I exits with C (default 1); later tasks are skipped
    oom:       task<I>of<N>-<duration>             task I is OOMKilled (exit 137); later tasks are skipped
    timeout:   [<N>tasks-]<duration>               the last task hangs; the run times out
    imagepull: <duration>                          the bundle cannot be pulled; nothing starts

`<duration>` is a Go duration (`0s`, `750ms`, `3s`, `1m30s`): how long the run takes to reach its
terminal condition; the tasks that run share it equally. Any other bundle plays `succeed:1tasks-1s`.
"""

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kubernaut.domain.duration import format_go_duration, format_rfc3339, parse_go_duration

BUNDLE_PREFIX = "kubernaut.local/standin/"
DURATION_PARAM = "STANDIN_DURATION"
MAX_TASKS = 20
OOM_EXIT_CODE = 137
# Tekton's default pipeline timeout, which governs when a PipelineRun sets no spec.timeouts.
DEFAULT_PIPELINE_TIMEOUT = timedelta(hours=1)

_TASKS = re.compile(r"(\d+)tasks?")
_FAILING_TASK = re.compile(r"task(\d+)of(\d+)")
_EXIT = re.compile(r"exit(\d+)")


class Outcome(StrEnum):
    SUCCEED = "succeed"
    FAIL = "fail"
    OOM = "oom"
    TIMEOUT = "timeout"
    IMAGEPULL = "imagepull"


# Which optional tokens each outcome takes besides the duration, and which it requires.
_ALLOWED: dict[Outcome, frozenset[str]] = {
    Outcome.SUCCEED: frozenset({"tasks"}),
    Outcome.FAIL: frozenset({"failing", "exit"}),
    Outcome.OOM: frozenset({"failing"}),
    Outcome.TIMEOUT: frozenset({"tasks"}),
    Outcome.IMAGEPULL: frozenset(),
}
_REQUIRED: dict[Outcome, frozenset[str]] = {Outcome.FAIL: frozenset({"failing"}), Outcome.OOM: frozenset({"failing"})}
_FORMS = {
    Outcome.SUCCEED: "succeed:[<N>tasks-]<duration>",
    Outcome.FAIL: "fail:task<I>of<N>[-exit<C>]-<duration>",
    Outcome.OOM: "oom:task<I>of<N>-<duration>",
    Outcome.TIMEOUT: "timeout:[<N>tasks-]<duration>",
    Outcome.IMAGEPULL: "imagepull:<duration>",
}


class BundleError(ValueError):
    """A stand-in bundle (or duration override) that does not follow the grammar."""


@dataclass(frozen=True)
class Behaviour:
    outcome: Outcome
    tasks: int
    duration: timedelta
    failing_task: int | None = None  # 1-based, for fail and oom
    exit_code: int | None = None  # for fail


FALLBACK = Behaviour(Outcome.SUCCEED, tasks=1, duration=timedelta(seconds=1))


def is_standin_bundle(bundle: str) -> bool:
    return bundle.startswith(BUNDLE_PREFIX)


def parse_bundle(bundle: str) -> Behaviour:
    """The behaviour a `kubernaut.local/standin/...` bundle names; BundleError if it is malformed."""
    if not is_standin_bundle(bundle):
        raise BundleError(f"bundle {bundle!r} is not under {BUNDLE_PREFIX}")
    reference = bundle[len(BUNDLE_PREFIX) :].split("@", 1)[0]
    outcome_text, colon, tag = reference.partition(":")
    try:
        outcome = Outcome(outcome_text)
    except ValueError:
        known = ", ".join(o.value for o in Outcome)
        raise BundleError(f"bundle {bundle!r}: unknown behaviour {outcome_text!r} (known: {known})") from None
    if not colon or not tag:
        raise BundleError(f"bundle {bundle!r}: missing tag, expected {_FORMS[outcome]}")
    *tokens, duration_text = tag.split("-")
    values = _parse_tokens(bundle, outcome, tokens)
    duration = _parse_duration(duration_text, f"bundle {bundle!r}: expected {_FORMS[outcome]}, and")
    if outcome in (Outcome.FAIL, Outcome.OOM):
        failing, tasks = values["failing"]
        if not 1 <= failing <= tasks:
            raise BundleError(f"bundle {bundle!r}: task{failing}of{tasks} names no task (1 <= I <= N)")
        exit_code = OOM_EXIT_CODE if outcome is Outcome.OOM else values.get("exit", (1,))[0]
        if not 1 <= exit_code <= 255:
            raise BundleError(f"bundle {bundle!r}: exit{exit_code} must be between 1 and 255")
        return Behaviour(outcome, tasks=tasks, duration=duration, failing_task=failing, exit_code=exit_code)
    tasks = values.get("tasks", (1,))[0] if outcome is not Outcome.IMAGEPULL else 0
    return Behaviour(outcome, tasks=tasks, duration=duration)


def _parse_tokens(bundle: str, outcome: Outcome, tokens: list[str]) -> dict[str, tuple[int, ...]]:
    values: dict[str, tuple[int, ...]] = {}
    for token in tokens:
        kind, numbers = _classify_token(token)
        if kind is None or kind not in _ALLOWED[outcome]:
            raise BundleError(f"bundle {bundle!r}: unexpected {token!r}, expected {_FORMS[outcome]}")
        if kind in values:
            raise BundleError(f"bundle {bundle!r}: {token!r} given twice")
        values[kind] = numbers
    missing = _REQUIRED.get(outcome, frozenset()) - values.keys()
    if missing:
        raise BundleError(f"bundle {bundle!r}: missing task<I>of<N>, expected {_FORMS[outcome]}")
    count = values["failing"][1] if "failing" in values else values.get("tasks", (1,))[0]
    if not 1 <= count <= MAX_TASKS:
        raise BundleError(f"bundle {bundle!r}: the pipeline must have 1 to {MAX_TASKS} tasks, not {count}")
    return values


def _classify_token(token: str) -> tuple[str | None, tuple[int, ...]]:
    for kind, pattern in (("tasks", _TASKS), ("failing", _FAILING_TASK), ("exit", _EXIT)):
        match = pattern.fullmatch(token)
        if match:
            return kind, tuple(int(group) for group in match.groups())
    return None, ()


def _parse_duration(text: str, context: str) -> timedelta:
    try:
        duration = parse_go_duration(text)
    except ValueError:
        raise BundleError(f"{context} {text!r} is not a Go duration such as 0s, 750ms or 3s") from None
    if duration < timedelta(0):
        raise BundleError(f"{context} duration {text!r} is negative")
    return duration


def decide_behaviour(bundle: str | None, duration_override: str | None = None) -> Behaviour:
    """What to play for a PipelineRun's bundle param and optional STANDIN_DURATION param.
    Bundles outside the stand-in prefix play FALLBACK; malformed stand-in bundles raise BundleError."""
    if not bundle:
        raise BundleError("the PipelineRun names no bundle (pipelineRef param 'bundle')")
    behaviour = parse_bundle(bundle) if is_standin_bundle(bundle) else FALLBACK
    if duration_override is not None:
        duration = _parse_duration(duration_override, f"param {DURATION_PARAM}:")
        behaviour = replace(behaviour, duration=duration)
    return behaviour


class TaskResult(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    OOM_KILLED = "OOMKilled"
    CANCELLED = "Cancelled"  # still running when the PipelineRun timed out


@dataclass(frozen=True)
class TaskPlan:
    index: int  # 1-based position in the pipeline
    name: str  # the pipeline task name
    starts_after: timedelta
    ends_after: timedelta
    result: TaskResult
    exit_code: int


@dataclass(frozen=True)
class Plan:
    """The tasks that run (in order, one after another) and when the run ends, relative to its start."""

    behaviour: Behaviour
    tasks: tuple[TaskPlan, ...]
    ends_after: timedelta

    @property
    def skipped(self) -> int:
        return self.behaviour.tasks - len(self.tasks)


def pipeline_task_name(index: int) -> str:
    return f"task-{index}"


def taskrun_name(pipelinerun: str, index: int) -> str:
    return f"{pipelinerun}-{pipeline_task_name(index)}"


def build_plan(behaviour: Behaviour) -> Plan:
    """Tasks that run share the duration equally; a failing task is the last one that runs."""
    running = behaviour.failing_task or behaviour.tasks
    last_result = {
        Outcome.SUCCEED: TaskResult.SUCCEEDED,
        Outcome.FAIL: TaskResult.FAILED,
        Outcome.OOM: TaskResult.OOM_KILLED,
        Outcome.TIMEOUT: TaskResult.CANCELLED,
        Outcome.IMAGEPULL: TaskResult.SUCCEEDED,
    }[behaviour.outcome]
    last_exit = {TaskResult.SUCCEEDED: 0, TaskResult.CANCELLED: 1}.get(last_result, behaviour.exit_code or 0)
    share = behaviour.duration / running if running else timedelta(0)
    tasks = tuple(
        TaskPlan(
            index=i,
            name=pipeline_task_name(i),
            starts_after=share * (i - 1),
            ends_after=share * i if i < running else behaviour.duration,
            result=last_result if i == running else TaskResult.SUCCEEDED,
            exit_code=last_exit if i == running else 0,
        )
        for i in range(1, running + 1)
    )
    return Plan(behaviour=behaviour, tasks=tasks, ends_after=behaviour.duration)


# Status fragments, shaped as tekton.dev/v1 writes them.


def build_condition(status: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    return {
        "type": "Succeeded",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_rfc3339(now),
    }


def build_running_condition(behaviour: Behaviour, completed: int, now: datetime) -> dict[str, Any]:
    incomplete = behaviour.tasks - completed
    message = f"Tasks Completed: {completed} (Failed: 0, Cancelled 0), Incomplete: {incomplete}, Skipped: 0"
    return build_condition("Unknown", "Running", message, now)


def build_resolving_condition(now: datetime) -> dict[str, Any]:
    return build_condition("Unknown", "ResolvingPipelineRef", "Pipeline resolution is in progress", now)


def build_child_references(pipelinerun: str, tasks: int) -> list[dict[str, str]]:
    """References to the TaskRuns of the first `tasks` pipeline tasks."""
    return [
        {
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "name": taskrun_name(pipelinerun, i),
            "pipelineTaskName": pipeline_task_name(i),
        }
        for i in range(1, tasks + 1)
    ]


def build_final_condition(
    plan: Plan, pipelinerun: str, bundle: str, pipeline_timeout: timedelta, now: datetime
) -> dict[str, Any]:
    """The terminal Succeeded condition of the PipelineRun."""
    behaviour = plan.behaviour
    ran = len(plan.tasks)
    if behaviour.outcome is Outcome.SUCCEED:
        return build_condition("True", "Succeeded", f"Tasks Completed: {ran} (Failed: 0, Cancelled 0), Skipped: 0", now)
    if behaviour.outcome is Outcome.TIMEOUT:
        message = f'PipelineRun "{pipelinerun}" failed to finish within "{format_go_duration(pipeline_timeout)}"'
        return build_condition("False", "PipelineRunTimeout", message, now)
    if behaviour.outcome is Outcome.IMAGEPULL:
        message = (
            f"Error retrieving pipeline for pipelinerun {pipelinerun}: image pull failed for bundle "
            f'"{bundle}": Back-off pulling image "{bundle}": ImagePullBackOff'
        )
        return build_condition("False", "CouldntGetPipeline", message, now)
    message = f"Tasks Completed: {ran} (Failed: 1, Cancelled 0), Skipped: {plan.skipped}"
    if behaviour.outcome is Outcome.OOM:
        failed = plan.tasks[-1]
        message += f'; TaskRun "{taskrun_name(pipelinerun, failed.index)}" was OOMKilled (exit code {OOM_EXIT_CODE})'
    return build_condition("False", "Failed", message, now)


def build_invalid_bundle_condition(pipelinerun: str, error: BundleError, now: datetime) -> dict[str, Any]:
    message = f"Error retrieving pipeline for pipelinerun {pipelinerun}: invalid stand-in bundle: {error}"
    return build_condition("False", "CouldntGetPipeline", message, now)


def build_taskrun(pipelinerun: dict[str, Any], task: TaskPlan) -> dict[str, Any]:
    """A child TaskRun of `pipelinerun`, labelled and owned as Tekton does."""
    meta = pipelinerun["metadata"]
    labels = {
        **(meta.get("labels") or {}),
        "tekton.dev/pipeline": "workflow",
        "tekton.dev/pipelineRun": meta["name"],
        "tekton.dev/pipelineTask": task.name,
    }
    service_account = (pipelinerun.get("spec", {}).get("taskRunTemplate") or {}).get("serviceAccountName")
    spec: dict[str, Any] = {"taskRef": {"kind": "Task", "name": task.name}}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {
            "name": taskrun_name(meta["name"], task.index),
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "tekton.dev/v1",
                    "kind": "PipelineRun",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


# Each TaskRun has two steps: `prepare` always succeeds, `run` carries the task's result.
_STEPS = ("prepare", "run")


def build_taskrun_running_status(name: str, now: datetime) -> dict[str, Any]:
    started = format_rfc3339(now)
    return {
        "conditions": [build_condition("Unknown", "Running", "Not all Steps in the Task have finished executing", now)],
        "podName": f"{name}-pod",
        "startTime": started,
        "steps": [{"name": step, "container": f"step-{step}", "running": {"startedAt": started}} for step in _STEPS],
    }


def build_taskrun_final_status(name: str, task: TaskPlan, started: datetime, now: datetime) -> dict[str, Any]:
    middle = started + (now - started) / 2
    run_reason = {
        TaskResult.SUCCEEDED: "Completed",
        TaskResult.FAILED: "Error",
        TaskResult.OOM_KILLED: "OOMKilled",
        TaskResult.CANCELLED: "TaskRunCancelled",
    }[task.result]
    steps = [
        _terminated_step("prepare", 0, "Completed", started, middle),
        _terminated_step("run", task.exit_code, run_reason, middle, now),
    ]
    if task.result is TaskResult.SUCCEEDED:
        condition = build_condition("True", "Succeeded", "All Steps have completed executing", now)
    elif task.result is TaskResult.CANCELLED:
        message = f'TaskRun "{name}" was cancelled. TaskRun cancelled as the PipelineRun it belongs to has timed out.'
        condition = build_condition("False", "TaskRunCancelled", message, now)
    else:
        suffix = ": OOMKilled" if task.result is TaskResult.OOM_KILLED else ""
        condition = build_condition("False", "Failed", f'"step-run" exited with code {task.exit_code}{suffix}', now)
    return {"conditions": [condition], "completionTime": format_rfc3339(now), "steps": steps}


def _terminated_step(step: str, exit_code: int, reason: str, started: datetime, finished: datetime) -> dict[str, Any]:
    return {
        "name": step,
        "container": f"step-{step}",
        "terminated": {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": format_rfc3339(started),
            "finishedAt": format_rfc3339(finished),
        },
    }


# Reading what is already there (for resuming after a restart).


def parse_succeeded_condition(status: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `Succeeded` condition of a status, if any."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == "Succeeded":
            return dict(condition)
    return None


def is_done(status: dict[str, Any] | None) -> bool:
    condition = parse_succeeded_condition(status)
    return condition is not None and condition.get("status") in ("True", "False")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_pipeline_timeout(spec: dict[str, Any]) -> timedelta:
    """`spec.timeouts.pipeline` if set and valid, else Tekton's default."""
    text = (spec.get("timeouts") or {}).get("pipeline")
    if not text:
        return DEFAULT_PIPELINE_TIMEOUT
    try:
        return parse_go_duration(str(text))
    except ValueError:
        return DEFAULT_PIPELINE_TIMEOUT


def parse_pipelinerun_params(spec: dict[str, Any]) -> tuple[str | None, str | None]:
    """The `bundle` resolver param and the optional STANDIN_DURATION param of a PipelineRun spec."""
    resolver_params = (spec.get("pipelineRef") or {}).get("params") or []
    bundle = next((p.get("value") for p in resolver_params if p.get("name") == "bundle"), None)
    duration = next((p.get("value") for p in spec.get("params") or [] if p.get("name") == DURATION_PARAM), None)
    return (str(bundle) if bundle is not None else None, str(duration) if duration is not None else None)
