"""The Tekton engine: a PipelineRun from a bundle; failure details read its TaskRuns."""

from datetime import datetime
from typing import Any

from lightkube import AsyncClient

from kubernaut.api.v1alpha1.common import ExecutionEngine
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution
from kubernaut.domain.execution import RunObservation, RunOutcome, observe_pipelinerun
from kubernaut.domain.failure import build_execution_failure
from kubernaut.domain.pipelinerun import build_pipelinerun
from kubernaut.kube.api import delete_if_ours, get_object
from kubernaut.kube.errors import Refused
from kubernaut.kube.resources import PipelineRunResource, TaskRunResource
from kubernaut.kube.runtime import Body


class TektonBackend:
    engine = ExecutionEngine.TEKTON
    kind = "PipelineRun"
    resource: Any = PipelineRunResource

    def validate(self, wfe: WorkflowExecution) -> str | None:
        return None

    def render(self, wfe: WorkflowExecution, *, namespace: str, service_account: str) -> Body:
        return build_pipelinerun(wfe, namespace=namespace, service_account=service_account)

    async def observe(self, client: AsyncClient, wfe: WorkflowExecution, run: Body, *, now: datetime) -> RunObservation:
        observation = observe_pipelinerun(run)
        if observation.outcome != RunOutcome.FAILED:
            return observation
        failure = build_execution_failure(
            pipelinerun=run,
            taskruns=await _fetch_taskruns(client, run),
            start_time=wfe.status.start_time,
            now=now,
            workflow_id=wfe.spec.workflow_ref.workflow_id,
            target=wfe.spec.target_resource,
        )
        return RunObservation(observation.outcome, observation.summary, failure=failure)

    async def delete(self, client: AsyncClient, name: str, namespace: str, *, uid: str) -> bool:
        # Foreground: the PipelineRun (the lock) stays until its TaskRuns, and their pods, are gone.
        # Tekton names a TaskRun after its PipelineRun and task, and a PipelineRun of the same name
        # created while the old TaskRuns still exist adopts them: the next run on the target would
        # end with the outcome of the last one without running.
        return await delete_if_ours(client, PipelineRunResource, name, namespace, uid=uid, propagation="Foreground")


async def _fetch_taskruns(client: AsyncClient, pipelinerun: Body) -> dict[str, Body]:
    namespace = (pipelinerun.get("metadata") or {}).get("namespace")
    found: dict[str, Body] = {}
    for ref in (pipelinerun.get("status") or {}).get("childReferences") or []:
        # A broken Tekton may write anything here: only a TaskRun reference with a name is read.
        if not isinstance(ref, dict) or ref.get("kind") != "TaskRun" or not isinstance(ref.get("name"), str):
            continue
        if not ref["name"]:
            continue
        try:
            taskrun = await get_object(client, TaskRunResource, ref["name"], namespace)
        except Refused:
            continue  # unreadable children are skipped, like missing ones; a transient error retries the pass
        if taskrun is not None:
            found[ref["name"]] = taskrun
    return found
