"""The test plays the Job controller and the kubelet: it writes a Job's status and creates its pod
as they would (there are neither on the local control plane).

No tests live here; the module name only keeps it beside the tests that use it.
"""

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.kube.client import install_crds, make_client, patch_status
from kubernaut.kube.resources import JobResource, PodResource
from kubernaut.paths import crd_paths
from tests.integration.executor_support import rfc3339
from tests.integration.harness import STATE_KUBECONFIG


@pytest.fixture(scope="module", name="kubeconfig")
def played_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A control plane of the module's own without the Job controller, the garbage collector,
    kube-scheduler and kwok: the tests that import this fixture play them, to pin each exact status."""
    plane = ControlPlane(
        tmp_path_factory.mktemp("played-jobs"),
        controllers="*,-job-controller,-garbage-collector-controller",
        fake_kubelet=False,
    )
    plane.start()
    STATE_KUBECONFIG.append(plane.kubeconfig)
    try:
        yield plane.kubeconfig
    finally:
        STATE_KUBECONFIG.remove(plane.kubeconfig)
        plane.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session", name="kube")
async def played_kube(kubeconfig: Path) -> AsyncIterator[AsyncClient]:
    client = make_client(kubeconfig)
    await install_crds(client, crd_paths())
    yield client
    await client.close()


BACKOFF = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETIONS = ("CompletionsReached", "Reached expected number of succeeded pods")


async def job_body(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    body: dict[str, Any] = (await kube.get(JobResource, name, namespace=namespace)).to_dict()
    return body


def job_conditions(at: datetime, *conditions: tuple[str, str, str]) -> list[dict[str, Any]]:
    return [
        {
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": rfc3339(at),
            "lastTransitionTime": rfc3339(at),
        }
        for type_, reason, message in conditions
    ]


async def start_job(kube: AsyncClient, name: str, namespace: str, started: datetime) -> None:
    """The Job controller's first write: the Job started, one pod active."""
    status = {"startTime": rfc3339(started), "active": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}}
    await patch_status(kube, JobResource, name, namespace, status)


async def complete_job(kube: AsyncClient, name: str, namespace: str, started: datetime, finished: datetime) -> None:
    """Success as 1.31+ writes it: SuccessCriteriaMet, then Complete with the completion time."""
    status = {
        "startTime": rfc3339(started),
        "completionTime": rfc3339(finished),
        "active": 0,
        "succeeded": 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": job_conditions(finished, ("SuccessCriteriaMet", *COMPLETIONS), ("Complete", *COMPLETIONS)),
    }
    await patch_status(kube, JobResource, name, namespace, status)


async def fail_job(
    kube: AsyncClient, name: str, namespace: str, started: datetime, failed: datetime, why: tuple[str, str]
) -> None:
    """Failure as 1.31+ writes it once the pods are gone: FailureTarget, then Failed."""
    status = {
        "startTime": rfc3339(started),
        "active": 0,
        "failed": 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": job_conditions(failed, ("FailureTarget", *why), ("Failed", *why)),
    }
    await patch_status(kube, JobResource, name, namespace, status)


async def create_job_pod(kube: AsyncClient, job: dict[str, Any], status: dict[str, Any]) -> str:
    """The Job's pod as the Job controller creates it, with the status the kubelet writes."""
    meta = job["metadata"]
    name = f"{meta['name']}-x7k2p"
    template = job["spec"]["template"]
    await kube.create(
        PodResource(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "labels": template["metadata"]["labels"],
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": template["spec"],
            }
        )
    )
    await patch_status(kube, PodResource, name, meta["namespace"], status)
    return name


def pod_status(phase: str, state: dict[str, Any], image: str) -> dict[str, Any]:
    started = "running" in state or "terminated" in state
    return {
        "phase": phase,
        "containerStatuses": [
            {
                "name": "workflow",
                "image": image,
                "imageID": f"{image}@sha256:{'a' * 64}" if started else "",
                "ready": "running" in state,
                "restartCount": 0,
                "started": "running" in state,
                "state": state,
            }
        ],
    }


async def play_garbage_collector(kube: AsyncClient, name: str, namespace: str) -> None:
    """What the garbage collector does once a foreground-deleted Job's pods are gone: drop its
    `foregroundDeletion` finalizer (the Job then goes)."""
    with contextlib.suppress(ApiError):
        await kube.patch(
            JobResource, name, {"metadata": {"finalizers": None}}, namespace=namespace, patch_type=PatchType.MERGE
        )
