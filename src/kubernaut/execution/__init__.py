"""Execution engines: the port the executor runs a WorkflowExecution through, and its adapters.

The executor knows only this port: which object an engine makes (its kind and lightkube resource),
how to render it from the WFE, what it says about the run, and how to delete it on release. Pure
rendering and analysis live in `kubernaut.domain` (`pipelinerun`, `job`, `failure`); the adapters
here add the reads they need (TaskRuns, pods) and the delete options.
"""

from datetime import datetime
from typing import Any, Protocol

from lightkube import AsyncClient

from kubernaut.api.v1alpha1.common import ExecutionEngine
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution
from kubernaut.domain.execution import RunObservation
from kubernaut.execution.job import JobBackend
from kubernaut.execution.tekton import TektonBackend
from kubernaut.kube.runtime import Body


class ExecutionBackend(Protocol):
    engine: ExecutionEngine
    kind: str  # of the object that runs the workflow and is the lock: "PipelineRun", "Job"
    resource: Any  # its lightkube resource class

    def validate(self, wfe: WorkflowExecution) -> str | None:
        """What stops this engine from running the WFE, for people; None when it may run."""

    def render(self, wfe: WorkflowExecution, *, namespace: str, service_account: str) -> Body:
        """The manifest of the run (named by the target's lock, labelled with its owner)."""

    async def observe(self, client: AsyncClient, wfe: WorkflowExecution, run: Body, *, now: datetime) -> RunObservation:
        """The run's outcome; a failure comes with its FailureDetails (the same shape for every engine)."""

    async def delete(self, client: AsyncClient, name: str, namespace: str, *, uid: str) -> bool:
        """Delete the run if it still has `uid` (see `kube.api.delete_if_ours`), in the foreground: the
        object, and so the lock, stays until its dependents are gone."""


BACKENDS: dict[ExecutionEngine, ExecutionBackend] = {
    ExecutionEngine.TEKTON: TektonBackend(),
    ExecutionEngine.JOB: JobBackend(),
}
