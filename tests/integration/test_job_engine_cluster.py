"""The Job engine on the local cluster as users run it: the real Job controller and kube-scheduler,
kwok as the kubelet of the fake node and the real garbage collector run the executor's Job to its end
and clean up after the lock's release. (test_executor_job.py plays them instead, to pin each status.)"""

from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.types import PatchType

from kubernaut.devcluster.controlplane import NODE_NAME
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import JobResource, PodResource
from tests.integration.executor_support import condition, create_wfe, wait_phase
from tests.integration.harness import OffsetClock, create_namespace, eventually, get_or_none, running, settings_for
from tests.integration.test_executor_job import job_spec


async def job_pods(kube: AsyncClient, job: str, namespace: str) -> list[dict[str, Any]]:
    return [p.to_dict() async for p in kube.list(PodResource, namespace=namespace, labels={"job-name": job})]


async def test_a_job_runs_on_the_real_job_controller_and_its_release_removes_its_pods(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_namespace(kube, "exec")
    clock = OffsetClock()
    target = f"{namespace}/deployment/web"
    lock = build_lock_name(target)
    settings = settings_for(exec_ns, execution={"cooldown": "2m"})
    async with running(kubeconfig, settings, ("executor",), clock=clock):
        await create_wfe(kube, "wfe-real", namespace, target, **job_spec())
        status = await wait_phase(kube, "wfe-real", namespace, "Completed", timeout=60)
        assert "failureDetails" not in status
        assert condition(status, "TektonPipelineComplete")["status"] == "True"
        job = (await kube.get(JobResource, lock, namespace=exec_ns)).to_dict()
        assert {c["type"] for c in job["status"]["conditions"] if c["status"] == "True"} >= {"Complete"}
        [pod] = await job_pods(kube, lock, exec_ns)
        assert (pod["spec"]["nodeName"], pod["status"]["phase"]) == (NODE_NAME, "Succeeded")

        # After the cooldown the executor deletes the Job in the foreground; the garbage collector
        # removes its pod, then the Job.
        clock.advance(300)
        await kube.patch(
            JobResource, lock, {"metadata": {"labels": {"poke": "1"}}}, namespace=exec_ns, patch_type=PatchType.MERGE
        )

        async def cleaned_up() -> bool:
            gone = await get_or_none(kube, JobResource, lock, exec_ns) is None
            return gone and not await job_pods(kube, lock, exec_ns)

        await eventually(cleaned_up, timeout=60, what=f"Job {exec_ns}/{lock} and its pod removed")
