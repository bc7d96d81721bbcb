"""PipelineRuns are listed and watched in the execution namespace only, and only those of a
WorkflowExecution, even when the controllers watch other namespaces too: the cache holds no
PipelineRun of anyone else."""

from pathlib import Path
from typing import Any

from lightkube import AsyncClient

from kubernaut.controllers.kinds import PIPELINERUN_KIND
from kubernaut.kube.resources import PipelineRunResource
from tests.integration.harness import create_execution_namespace, create_namespace, eventually, running, settings_for


def pipelinerun(name: str, namespace: str, *, ours: bool = True) -> Any:
    labels = {"kubernaut.ai/workflow-execution": name} if ours else {}
    return PipelineRunResource(
        {
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {},
        }
    )


async def test_pipelineruns_are_watched_in_the_execution_namespace_only_and_only_ours(
    kube: AsyncClient, kubeconfig: Path
) -> None:
    exec_ns = await create_execution_namespace(kube)
    other_ns = await create_namespace(kube, "other")
    await kube.create(pipelinerun("before", exec_ns))
    await kube.create(pipelinerun("before", other_ns))
    await kube.create(pipelinerun("someone-elses", exec_ns, ours=False))
    # The controllers watch both namespaces (the harness's default: every namespace of the test).
    async with running(kubeconfig, settings_for(exec_ns), ("executor",)) as manager:
        cache = manager.caches[PIPELINERUN_KIND.plural]
        seen: list[str] = []
        cache.listen(lambda _type, body, _old: seen.append(f"{_type} {body['metadata']['namespace']}"))
        assert sorted(b["metadata"]["namespace"] for b in cache.all()) == [exec_ns]

        await kube.create(pipelinerun("after", other_ns))
        await kube.create(pipelinerun("theirs-too", exec_ns, ours=False))
        await kube.create(pipelinerun("after", exec_ns))

        async def arrived() -> bool:
            return cache.get(f"{exec_ns}/after") is not None

        await eventually(arrived, what="the execution namespace's new PipelineRun in the cache")
        await kube.delete(PipelineRunResource, "before", namespace=exec_ns)

        async def gone() -> bool:
            return cache.get(f"{exec_ns}/before") is None

        await eventually(gone, what="the deleted PipelineRun out of the cache")
        assert sorted(b["metadata"]["name"] for b in cache.all()) == ["after"]
        assert all(event.endswith(exec_ns) for event in seen), seen
