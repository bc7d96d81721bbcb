"""The sample workflows: real Tekton Pipelines whose tasks kwok, the fake kubelet, plays as their name
says, pushed as bundles to the local registry.

A sample bundle is named by what it plays:

    kubernaut.local/samples/<outcome>:<tag>     (the catalog's placeholder; tests name `<outcome>:<tag>`)

    succeed:   [<N>tasks-]<duration>               N tasks (default 1), all succeed
    fail:      task<I>of<N>[-exit<C>]-<duration>   task I's step exits with C (default 1); later tasks are skipped
    oom:       task<I>of<N>-<duration>             task I's step is OOMKilled (exit 137)
    timeout:   [<N>tasks-]<duration>               the last task hangs until its timeout
    imagepull: <duration>                          the first task cannot pull its image; nothing runs

`<duration>` is a Go duration (`0s`, `750ms`, `3s`): the tasks share it equally. `build_pipeline`
makes the name a Pipeline `workflow` whose task pods carry the annotations that kwok's stages
(tools/controlplane/kwok/stages/) read; Tekton itself runs it as any other Pipeline.
`localize_catalog` pushes each sample bundle the catalog names to the local registry and points the
catalog at it.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from kubernaut.domain.duration import format_go_duration, parse_go_duration

SAMPLE_PREFIX = "kubernaut.local/samples/"
MAX_TASKS = 20
OOM_EXIT_CODE = 137

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
    """A sample bundle name that does not follow the grammar."""


@dataclass(frozen=True)
class Behaviour:
    outcome: Outcome
    tasks: int
    duration: timedelta
    failing_task: int | None = None  # 1-based, for fail and oom
    exit_code: int | None = None  # for fail


def parse_sample(bundle: str) -> Behaviour:
    """What a sample bundle name (`succeed:2tasks-3s`, optionally under `kubernaut.local/samples/`)
    has kwok play; BundleError if it is malformed."""
    reference = bundle.removeprefix(SAMPLE_PREFIX).split("@", 1)[0]
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


STEP_IMAGE = "fake.local/tools/kubectl"  # never pulled: every step has a script, and kwok runs no container
STEP = "run"


def build_pipeline(behaviour: Behaviour) -> dict[str, Any]:
    """The Pipeline `workflow` (the name our PipelineRuns ask the bundles resolver for)."""
    count = max(behaviour.tasks, 1)
    share = format_go_duration(behaviour.duration / count)
    tasks = []
    for index in range(1, count + 1):
        name = f"task-{index}"
        annotations, fields = _played(behaviour, index, count, name, share)
        task: dict[str, Any] = {
            "name": name,
            "params": [{"name": "target", "value": "$(params.TARGET_RESOURCE)"}],
            "taskSpec": {
                "metadata": {"annotations": annotations},
                "params": [{"name": "target", "type": "string"}],
                "steps": [{"name": STEP, "image": STEP_IMAGE, "script": f'echo "{name} on $(params.target)"'}],
            },
            **fields,
        }
        if index > 1:
            task["runAfter"] = [f"task-{index - 1}"]
        tasks.append(task)
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "workflow"},
        "spec": {"params": [{"name": "TARGET_RESOURCE", "type": "string"}], "tasks": tasks},
    }


def _played(
    behaviour: Behaviour, index: int, count: int, name: str, share: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """kwok's annotations for one task's pod, and fields of the pipeline task itself."""
    outcome = behaviour.outcome
    if outcome is Outcome.IMAGEPULL and index == 1:
        return {"fake.kubelet/image-pull-backoff": "true"}, {}
    if outcome is Outcome.TIMEOUT and index == count:
        return {"fake.kubelet/hang": "true"}, {"timeout": share}
    annotations = {"fake.kubelet/run-duration": share}
    if outcome in (Outcome.FAIL, Outcome.OOM) and index == behaviour.failing_task:
        annotations["fake.kubelet/fail"] = f"{name}/{STEP}"
        annotations["fake.kubelet/exit-code"] = str(behaviour.exit_code)
        if outcome is Outcome.OOM:
            annotations["fake.kubelet/reason"] = "OOMKilled"
    return annotations, {}


def local_image(bundle: str, registry: str) -> str:
    """Where the local registry holds a sample bundle."""
    return f"{registry}/samples/{bundle.removeprefix(SAMPLE_PREFIX).split('@', 1)[0]}"


def is_sample(bundle: str) -> bool:
    return bundle.startswith(SAMPLE_PREFIX)


def localize_catalog(
    objects: Sequence[Mapping[str, Any]], registry: str, push: Callable[[str, list[dict[str, Any]]], str]
) -> list[dict[str, Any]]:
    """The objects with every sample bundle of a RemediationWorkflow pushed to `registry` (by `push`,
    once each) and the workflow pointed at it; other objects and images are left as they are."""
    pushed: dict[str, str] = {}
    localized = []
    for obj in objects:
        image = str((obj.get("spec") or {}).get("containerImage") or "")
        if obj.get("kind") != "RemediationWorkflow" or not is_sample(image):
            localized.append(dict(obj))
            continue
        if image not in pushed:
            pushed[image] = local_image(image, registry)
            push(pushed[image], [build_pipeline(parse_sample(image))])
        localized.append({**obj, "spec": {**obj["spec"], "containerImage": pushed[image]}})
    return localized
