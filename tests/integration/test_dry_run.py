"""Dry run end to end: the orchestrator as its ServiceAccount with the shipped RBAC and admission policy.
A dry-run request (annotated, or through its workflow) passes selection and routing, has the API
server validate its WorkflowExecution and PipelineRun, and ends Completed with outcome DryRun: no
WFE, no PipelineRun, no lock. A PipelineRun the API server refuses gives validated false with the
server's message. The orchestrator can create PipelineRuns only as dry runs."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lightkube import codecs
from lightkube.core.exceptions import ApiError

from kubernaut.domain.target import build_lock_name
from kubernaut.kube.client import make_client
from kubernaut.kube.resources import (
    JobResource,
    PipelineRunResource,
    RemediationRequestResource,
    RemediationWorkflowResource,
)
from tests.integration.harness import eventually
from tests.integration.operator_process import (
    EXECUTION_NAMESPACE,
    OperatorProcess,
    ProductionCluster,
    production_cluster,
    write_config,
)
from tests.integration.rr import rr_manifest, rr_status, wfe_names

DRY_RUN = {"kubernaut.ai/dry-run": "true"}
UNTRUSTED = "untrusted.example/workflows/restart:1"
POLICY_MESSAGE = "bundles from untrusted.example are not allowed"


@dataclass
class Running:
    cluster: ProductionCluster
    namespace: str
    orchestrator_kubeconfig: Path


def bundle_policy() -> list[dict[str, Any]]:
    """A cluster policy (as Kyverno or Gatekeeper would hold one) that refuses some PipelineRuns."""
    rule = {"apiGroups": ["tekton.dev"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pipelineruns"]}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "trusted-bundles"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [rule]},
                "validations": [
                    {
                        "expression": "!has(object.spec.pipelineRef.params) || !object.spec.pipelineRef.params"
                        ".exists(p, p.name == 'bundle' && p.value.startsWith('untrusted.example/'))",
                        "message": POLICY_MESSAGE,
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "trusted-bundles"},
            "spec": {"policyName": "trusted-bundles", "validationActions": ["Deny"]},
        },
    ]


def workflow(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationWorkflow",
        "metadata": {"name": name},
        "spec": {"workflowId": name, "version": "1.0.0", "containerImage": image, "dryRun": True, **spec},
    }


# In the catalog before the orchestrator starts, so that its first selection already sees them.
CATALOG = [
    workflow("restart-untrusted", UNTRUSTED),
    workflow("scale-job", "registry.example/scale:1.0", execution={"engine": "job", "command": ["/scale", "-n", "3"]}),
]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    directory = tmp_path_factory.mktemp("dryrun")
    async with production_cluster(directory) as cluster:
        for doc in bundle_policy():
            await cluster.admin.create(codecs.from_dict(doc))
        for entry in CATALOG:
            await cluster.admin.create(RemediationWorkflowResource(entry))
        namespace = await cluster.namespace("dry")
        console = ["console"]
        extra = {"notifications": {"critical": console, "high": console, "medium": console, "low": console}}
        config = write_config(directory / "orchestrator.yaml", audit_db=directory / "orchestrator.db", extra=extra)
        kubeconfig = await cluster.kubeconfig_for("orchestrator")
        proc = OperatorProcess("orchestrator", kubeconfig, config, "orchestrator", directory / "orchestrator.log")
        proc.start()
        try:
            await proc.wait_ready()
            yield Running(cluster, namespace, kubeconfig)
            assert "forbidden" not in proc.log().lower(), proc.log()[-3000:]
        finally:
            proc.stop_now()


async def finished(run: Running, name: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status = await rr_status(run.cluster.admin, name, run.namespace)
        return status if status.get("overallPhase") in ("Completed", "Failed", "TimedOut") else None

    return await eventually(done, timeout=60, interval=0.1, what=f"{name} finished")


async def pipelineruns(run: Running) -> list[str]:
    return [p.metadata.name async for p in run.cluster.admin.list(PipelineRunResource, namespace=EXECUTION_NAMESPACE)]


async def test_an_annotated_request_validates_and_leaves_nothing(running: Running) -> None:
    target = {"kind": "Deployment", "name": "web", "namespace": running.namespace}
    body = rr_manifest("rr-dry", running.namespace, target=target)
    body["metadata"]["annotations"] = DRY_RUN
    await running.cluster.admin.create(RemediationRequestResource(body))
    status = await finished(running, "rr-dry")
    assert (status["overallPhase"], status["outcome"]) == ("Completed", "DryRun"), status
    assert status["dryRun"] == {
        "workflowId": "restart-deployment",
        "executionName": "we-rr-dry",
        "lockName": build_lock_name(f"{running.namespace}/Deployment/web"),
        "validated": True,
        "message": "would run (the request is annotated kubernaut.ai/dry-run=true)",
    }
    assert await wfe_names(running.cluster.admin, running.namespace) == []
    assert await pipelineruns(running) == []  # no PipelineRun, so no lock


async def test_a_dry_run_workflow_and_a_refused_pipelinerun(running: Running) -> None:
    target = {"kind": "Deployment", "name": "api", "namespace": running.namespace}
    body = rr_manifest("rr-untrusted", running.namespace, target=target, bundle=None)
    body["spec"]["workflowRef"] = {"workflowId": "restart-untrusted"}
    await running.cluster.admin.create(RemediationRequestResource(body))
    status = await finished(running, "rr-untrusted")
    assert (status["overallPhase"], status.get("outcome")) == ("Completed", "DryRun"), status
    assert status["dryRun"]["validated"] is False
    assert status["dryRun"]["workflowId"] == "restart-untrusted"
    assert POLICY_MESSAGE in status["dryRun"]["message"]
    assert status["dryRun"]["message"].startswith(f"PipelineRun {status['dryRun']['lockName']}: ")
    assert await wfe_names(running.cluster.admin, running.namespace) == []
    assert await pipelineruns(running) == []


async def test_a_job_engine_dry_run_validates_the_job(running: Running) -> None:
    target = {"kind": "Deployment", "name": "batch", "namespace": running.namespace}
    body = rr_manifest("rr-job", running.namespace, target=target, bundle=None)
    body["spec"]["workflowRef"] = {"workflowId": "scale-job"}
    await running.cluster.admin.create(RemediationRequestResource(body))
    status = await finished(running, "rr-job")
    assert (status["overallPhase"], status.get("outcome")) == ("Completed", "DryRun"), status
    assert status["dryRun"]["validated"] is True, status["dryRun"]
    assert status["dryRun"]["message"] == "would run (workflow scale-job sets dryRun)"
    assert status["dryRun"]["lockName"] == build_lock_name(f"{running.namespace}/Deployment/batch")
    jobs = [j async for j in running.cluster.admin.list(JobResource, namespace=EXECUTION_NAMESPACE)]
    assert jobs == []


async def test_the_orchestrator_creates_pipelineruns_only_as_dry_runs(running: Running) -> None:
    client = make_client(running.orchestrator_kubeconfig)
    run = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": "not-a-dry-run", "namespace": EXECUTION_NAMESPACE},
        "spec": {"pipelineRef": {"name": "workflow"}},
    }
    try:
        await client.create(PipelineRunResource(run), dry_run=True)
        with pytest.raises(ApiError, match="may create PipelineRuns and Jobs only as server-side dry runs"):
            await client.create(PipelineRunResource(run))
    finally:
        await client.close()
    assert await pipelineruns(running) == []
