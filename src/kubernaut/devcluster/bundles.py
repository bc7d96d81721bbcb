"""The sample catalog's workflow bundles, built for the local cluster's real Tekton from their names.

A sample bundle is named as in `behaviour.py` (`kubernaut.local/standin/<outcome>:<tag>`, such as
`fail:task2of3-exit1-5s`). `build_pipeline` makes it a Tekton Pipeline whose tasks kwok, the fake
kubelet, plays as the name says (the stages in tools/controlplane/kwok/stages/ read each task pod's
annotations): every task runs for its share of the duration; the failing task's step exits with
the code (137 and OOMKilled for oom); a timeout's last task hangs until its `timeout`; an image
pull failure's first task cannot pull its image. `localize_catalog` pushes each bundle the catalog
names to the local registry and points the catalog at it.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernaut.devcluster.behaviour import BUNDLE_PREFIX, Behaviour, Outcome, is_standin_bundle, parse_bundle
from kubernaut.domain.duration import format_go_duration

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
    return f"{registry}/samples/{bundle[len(BUNDLE_PREFIX) :].split('@', 1)[0]}"


def localize_catalog(
    objects: Sequence[Mapping[str, Any]], registry: str, push: Callable[[str, list[dict[str, Any]]], str]
) -> list[dict[str, Any]]:
    """The objects with every sample bundle of a RemediationWorkflow pushed to `registry` (by `push`,
    once each) and the workflow pointed at it; other objects and images are left as they are."""
    pushed: dict[str, str] = {}
    localized = []
    for obj in objects:
        image = str((obj.get("spec") or {}).get("containerImage") or "")
        if obj.get("kind") != "RemediationWorkflow" or not is_standin_bundle(image):
            localized.append(dict(obj))
            continue
        if image not in pushed:
            pushed[image] = local_image(image, registry)
            push(pushed[image], [build_pipeline(parse_bundle(image))])
        localized.append({**obj, "spec": {**obj["spec"], "containerImage": pushed[image]}})
    return localized
