"""Approval end to end: the controllers as their ServiceAccounts with the shipped RBAC, the shipped
webhook, and people with client certificates deciding with `kubernaut approve|reject` or kubectl-style
patches. Approve runs it, reject and expiry fail it, the webhook names the real user and refuses a
hand-written one, a decision is made once, and each decision is one audit event with its actor."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding
from lightkube.types import PatchType

from kubernaut.devcluster.webhook import start_dev_webhook
from kubernaut.kube.client import make_client
from kubernaut.kube.resources import (
    RemediationApprovalRequestResource,
    RemediationRequestResource,
)
from tests.integration.audit_e2e_support import list_audit_events, run_kubernaut
from tests.integration.harness import eventually
from tests.integration.operator_process import (
    OperatorProcess,
    ProductionCluster,
    production_cluster,
    user_kubeconfig,
    write_config,
)
from tests.integration.rr import rr_manifest, rr_status, wfe_names
from tests.integration.tekton_support import played

DECISION = "kubernaut.ai/decision"
REASON = "kubernaut.ai/decision-reason"
DECIDED_BY = "kubernaut.ai/decided-by"
APPROVAL_TIMEOUT = "20s"


@dataclass
class Running:
    cluster: ProductionCluster
    namespace: str
    people: dict[str, AsyncClient]
    kubeconfigs: dict[str, Path]
    audit_db: Path


async def bind_approver(admin: AsyncClient, user: str) -> None:
    await admin.create(
        ClusterRoleBinding(
            metadata=ObjectMeta(name=f"approver-{user}"),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name="kubernaut-approver"),
            subjects=[Subject(kind="User", name=user, apiGroup="rbac.authorization.k8s.io")],
        )
    )


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory, bundle_registry: str) -> AsyncIterator[Running]:
    directory = tmp_path_factory.mktemp("approval")
    async with production_cluster(
        directory, "--enable-admission-plugins=OwnerReferencesPermissionEnforcement", registry=bundle_registry
    ) as cluster:
        namespace = await cluster.namespace("approve")
        webhook = await start_dev_webhook(cluster.admin, directory)
        kubeconfigs = {u: user_kubeconfig(cluster.plane, u, directory) for u in ("alice", "bob", "mallory")}
        people = {u: make_client(path) for u, path in kubeconfigs.items()}
        await bind_approver(cluster.admin, "alice")
        await bind_approver(cluster.admin, "bob")
        console = ["console"]
        extra = {
            "notifications": {"critical": console, "high": console, "medium": console, "low": console},
            "approval": {"requiredFor": {"namespaces": [namespace]}, "timeout": APPROVAL_TIMEOUT},
        }
        procs = []
        try:
            for component in ("orchestrator", "executor", "notifier"):
                config = write_config(
                    directory / f"{component}.yaml",
                    audit_db=directory / f"{component}.db",
                    cooldown="2s",
                    extra=extra,
                )
                kubeconfig = await cluster.kubeconfig_for(component)
                procs.append(
                    OperatorProcess(component, kubeconfig, config, component, directory / f"{component}.log").start()
                )
            for proc in procs:
                await proc.wait_ready()
            yield Running(cluster, namespace, people, kubeconfigs, directory / "orchestrator.db")
            for proc in procs:
                assert "forbidden" not in proc.log().lower(), f"{proc.name} was refused:\n{proc.log()[-3000:]}"
        finally:
            for proc in procs:
                proc.stop_now()
            for client in people.values():
                await client.close()
            await webhook.stop(cluster.admin)


async def create_rr(run: Running, name: str, target: str) -> None:
    where = {"kind": "Deployment", "name": target, "namespace": run.namespace}
    body = rr_manifest(name, run.namespace, target=where, bundle=played("succeed:1tasks-1s"))
    await run.cluster.admin.create(RemediationRequestResource(body))


async def wait_phase(run: Running, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        status = await rr_status(run.cluster.admin, name, run.namespace)
        return status if status.get("overallPhase") in phases else None

    return await eventually(reached, timeout=timeout, interval=0.1, what=f"{name} in {' or '.join(phases)}")


async def approval(run: Running, rr: str) -> dict[str, Any]:
    found = await run.cluster.admin.get(RemediationApprovalRequestResource, f"rar-{rr}", namespace=run.namespace)
    return dict(found.to_dict())


async def waiting_for_approval(run: Running, rr: str) -> dict[str, Any]:
    await wait_phase(run, rr, "AwaitingApproval")

    async def pending() -> dict[str, Any] | None:
        body = await approval(run, rr)
        return body if (body.get("status") or {}).get("phase") == "Pending" else None

    return await eventually(pending, what=f"rar-{rr} Pending")


async def annotate(client: AsyncClient, run: Running, rr: str, values: dict[str, str]) -> None:
    await client.patch(
        RemediationApprovalRequestResource,
        f"rar-{rr}",
        {"metadata": {"annotations": values}},
        namespace=run.namespace,
        patch_type=PatchType.MERGE,
    )


async def cli(run: Running, user: str, *args: str) -> Any:
    return await asyncio.to_thread(
        run_kubernaut, *args, "-n", run.namespace, "--kubeconfig", str(run.kubeconfigs[user])
    )


async def decided_events(run: Running, rr: str) -> list[dict[str, Any]]:
    events = await asyncio.to_thread(list_audit_events, f"sqlite:///{run.audit_db}")
    return [e for e in events if e["event_type"] == "orchestrator.approval.decided" and e["resource_id"] == rr]


async def one_decision_event(run: Running, rr: str) -> dict[str, Any]:
    async def recorded() -> list[dict[str, Any]]:
        return await decided_events(run, rr)

    found = await eventually(recorded, timeout=30, interval=0.2, what=f"the decision event of {rr}")
    assert len(found) == 1, found
    return found[0]


async def test_approve_runs_it_and_names_the_real_user(running: Running) -> None:
    await create_rr(running, "rr-approve", "web")
    rar = await waiting_for_approval(running, "rr-approve")
    assert rar["metadata"]["ownerReferences"][0]["name"] == "rr-approve"
    assert rar["spec"]["workflow"]["workflowId"] == "restart-deployment"
    assert rar["spec"]["reason"] == f"namespace {running.namespace} requires approval"
    assert await wfe_names(running.cluster.admin, running.namespace) == []

    result = await cli(running, "alice", "approve", "rr-approve", "--reason", "checked the dashboards")
    assert result.returncode == 0, result.stderr
    done = await wait_phase(running, "rr-approve", "Completed", "Failed")
    assert done["overallPhase"] == "Completed", done
    assert "we-rr-approve" in await wfe_names(running.cluster.admin, running.namespace)
    status = (await approval(running, "rr-approve"))["status"]
    assert {k: status.get(k) for k in ("phase", "decision", "decidedBy", "decidedVia", "message")} == {
        "phase": "Approved",
        "decision": "Approved",
        "decidedBy": "alice",
        "decidedVia": "cli",
        "message": "checked the dashboards",
    }
    assert status["decidedAt"]
    event = await one_decision_event(running, "rr-approve")
    assert (event["actor_type"], event["actor_id"], event["event_data"]["decision"]) == ("user", "alice", "Approved")

    # An approval decides once: the webhook refuses a second decision, and says why.
    with pytest.raises(ApiError, match="rar-rr-approve was already approved by alice") as refused:
        await annotate(running.people["bob"], running, "rr-approve", {DECISION: "Rejected", REASON: "no"})
    assert "an approval decides once" in refused.value.status.message
    again = await cli(running, "bob", "reject", "rr-approve", "--reason", "too late")
    assert again.returncode != 0
    assert "already Approved (alice); an approval decides once" in again.stderr
    assert (await approval(running, "rr-approve"))["status"]["decidedBy"] == "alice"


async def test_reject_fails_it(running: Running) -> None:
    await create_rr(running, "rr-reject", "db")
    await waiting_for_approval(running, "rr-reject")
    await annotate(running.people["bob"], running, "rr-reject", {DECISION: "Rejected", REASON: "freeze week"})
    failed = await wait_phase(running, "rr-reject", "Failed", "Completed")
    assert (failed["overallPhase"], failed["failurePhase"]) == ("Failed", "approval"), failed
    assert failed["failureReason"] == "Rejected by bob: freeze week"
    assert "we-rr-reject" not in await wfe_names(running.cluster.admin, running.namespace)
    status = (await approval(running, "rr-reject"))["status"]
    assert (status["phase"], status["decidedBy"], status["decidedVia"]) == ("Rejected", "bob", "kubectl")
    event = await one_decision_event(running, "rr-reject")
    assert (event["actor_id"], event["event_data"]["decision"]) == ("bob", "Rejected")


async def test_a_hand_written_decider_is_refused_and_rights_are_needed(running: Running) -> None:
    await create_rr(running, "rr-forged", "cache")
    await waiting_for_approval(running, "rr-forged")
    with pytest.raises(ApiError, match="cannot be set or changed by hand"):
        await annotate(running.people["bob"], running, "rr-forged", {DECISION: "Approved", DECIDED_BY: "alice"})
    with pytest.raises(ApiError) as forbidden:
        await annotate(running.people["mallory"], running, "rr-forged", {DECISION: "Approved"})
    assert forbidden.value.status.code == 403
    body = await approval(running, "rr-forged")
    assert DECISION not in (body["metadata"].get("annotations") or {})
    assert (await rr_status(running.cluster.admin, "rr-forged", running.namespace))["overallPhase"] == (
        "AwaitingApproval"
    )


async def test_without_a_decision_it_expires_and_fails(running: Running) -> None:
    await create_rr(running, "rr-expire", "queue")
    rar = await waiting_for_approval(running, "rr-expire")
    failed = await wait_phase(running, "rr-expire", "Failed", "Completed", timeout=90)
    assert (failed["overallPhase"], failed["failurePhase"]) == ("Failed", "approval"), failed
    assert failed["failureReason"] == f"Approval expired: no decision by {rar['spec']['requiredBy']}"
    status = (await approval(running, "rr-expire"))["status"]
    assert (status["phase"], status["decidedBy"]) == ("Expired", "kubernaut")
    event = await one_decision_event(running, "rr-expire")
    assert event["event_data"]["decision"] == "Expired"
    with pytest.raises(ApiError, match="rar-rr-expire has expired"):
        await annotate(running.people["alice"], running, "rr-expire", {DECISION: "Approved"})
    late = await cli(running, "alice", "approve", "rr-expire")
    assert late.returncode != 0
    assert "already Expired" in late.stderr
