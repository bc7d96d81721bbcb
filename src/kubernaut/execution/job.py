"""The Job engine: a Kubernetes Job from a container image; its pods tell how the container ended."""

from datetime import datetime
from typing import Any

from lightkube import AsyncClient

from kubernaut.api.v1alpha1.common import ExecutionEngine
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution
from kubernaut.domain.execution import RunObservation
from kubernaut.domain.job import LABEL_JOB_NAME, build_job, observe_job, validate_job_spec
from kubernaut.kube.api import delete_if_ours, list_objects
from kubernaut.kube.resources import JobResource, PodResource
from kubernaut.kube.runtime import Body


class JobBackend:
    engine = ExecutionEngine.JOB
    kind = "Job"
    resource: Any = JobResource

    def validate(self, wfe: WorkflowExecution) -> str | None:
        return validate_job_spec(wfe)

    def render(self, wfe: WorkflowExecution, *, namespace: str, service_account: str) -> Body:
        return build_job(wfe, namespace=namespace, service_account=service_account)

    async def observe(self, client: AsyncClient, wfe: WorkflowExecution, run: Body, *, now: datetime) -> RunObservation:
        meta = run.get("metadata") or {}
        pods = await list_objects(client, PodResource, meta.get("namespace", ""), labels={LABEL_JOB_NAME: meta["name"]})
        return observe_job(
            run,
            pods,
            start_time=wfe.status.start_time,
            now=now,
            workflow_id=wfe.spec.workflow_ref.workflow_id,
            target=wfe.spec.target_resource,
        )

    async def delete(self, client: AsyncClient, name: str, namespace: str, *, uid: str) -> bool:
        # Foreground: the Job (the lock) stays until its pods are gone, so no workflow outlives its lock.
        return await delete_if_ours(client, JobResource, name, namespace, uid=uid, propagation="Foreground")
