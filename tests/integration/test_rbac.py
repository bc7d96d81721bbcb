"""The controllers as their ServiceAccounts with exactly the shipped RBAC (applied from
`kubectl kustomize config/default` to an API server enforcing RBAC and owner references), on the
happy path and the block paths; people clear an execution block only with the right verbs, and the
executor records the authenticated name of whoever did."""

import asyncio
import contextlib
import json
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import Secret
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding
from lightkube.types import PatchType

from kubernaut.devcluster.controlplane import free_port
from kubernaut.devcluster.webhook import start_dev_webhook
from kubernaut.kube.client import make_client
from kubernaut.kube.resources import (
    NotificationRequestResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)
from tests.integration.harness import events_for, eventually
from tests.integration.operator_process import (
    EXECUTION_NAMESPACE,
    SYSTEM_NAMESPACE,
    OperatorProcess,
    ProductionCluster,
    production_cluster,
    user_kubeconfig,
    write_config,
)
from tests.integration.rr import rr_manifest, rr_status
from tests.integration.tekton_support import played

CLEAR = "kubernaut.ai/clear-execution-block"
SUCCEED = "succeed:1tasks-1s"
SLOW = "succeed:1tasks-4s"
FAIL = "fail:task1of1-1s"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory, bundle_registry: str) -> AsyncIterator[ProductionCluster]:
    # Owner-reference enforcement on: creating children with blockOwnerDeletion needs its own right.
    async with production_cluster(
        tmp_path_factory.mktemp("rbac"),
        "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
        registry=bundle_registry,
    ) as found:
        yield found


def sa(name: str) -> tuple[str, list[str]]:
    return (
        f"system:serviceaccount:{SYSTEM_NAMESPACE}:kubernaut-{name}",
        ["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM_NAMESPACE}", "system:authenticated"],
    )


# (who, verb, group, resource, subresource, namespace, name, allowed)
ACCESS = [
    ("executor", "create", "tekton.dev", "pipelineruns", "", EXECUTION_NAMESPACE, "", True),
    ("executor", "delete", "tekton.dev", "pipelineruns", "", EXECUTION_NAMESPACE, "wfe-x", True),
    ("executor", "get", "tekton.dev", "taskruns", "", EXECUTION_NAMESPACE, "t", True),
    ("executor", "create", "tekton.dev", "pipelineruns", "", "default", "", False),
    ("executor", "delete", "tekton.dev", "pipelineruns", "", "team-a", "wfe-x", False),
    ("executor", "list", "tekton.dev", "pipelineruns", "", EXECUTION_NAMESPACE, "", True),
    ("executor", "watch", "tekton.dev", "pipelineruns", "", EXECUTION_NAMESPACE, "", True),
    ("executor", "list", "tekton.dev", "pipelineruns", "", "", "", False),
    ("executor", "watch", "tekton.dev", "pipelineruns", "", "team-a", "", False),
    ("executor", "update", "tekton.dev", "pipelineruns", "", EXECUTION_NAMESPACE, "wfe-x", False),
    ("executor", "create", "batch", "jobs", "", EXECUTION_NAMESPACE, "", True),
    ("executor", "delete", "batch", "jobs", "", EXECUTION_NAMESPACE, "wfe-x", True),
    ("executor", "watch", "batch", "jobs", "", EXECUTION_NAMESPACE, "", True),
    ("executor", "create", "batch", "jobs", "", "team-a", "", False),
    ("executor", "update", "batch", "jobs", "", EXECUTION_NAMESPACE, "wfe-x", False),
    ("executor", "list", "", "pods", "", EXECUTION_NAMESPACE, "", True),
    ("executor", "delete", "", "pods", "", EXECUTION_NAMESPACE, "p", False),
    ("executor", "list", "", "pods", "", "team-a", "", False),
    ("executor", "patch", "kubernaut.ai", "workflowexecutions", "status", "team-a", "we-1", True),
    ("executor", "patch", "kubernaut.ai", "workflowexecutions", "", "team-a", "we-1", True),
    ("executor", "delete", "kubernaut.ai", "workflowexecutions", "", "team-a", "we-1", False),
    ("executor", "patch", "kubernaut.ai", "remediationrequests", "status", "team-a", "rr-1", False),
    ("executor", "create", "", "events", "", "team-a", "", True),
    ("executor", "get", "", "secrets", "", SYSTEM_NAMESPACE, "kubernaut-notification-channels", False),
    ("executor", "update", "coordination.k8s.io", "leases", "", SYSTEM_NAMESPACE, "kubernaut-executor", True),
    ("executor", "update", "coordination.k8s.io", "leases", "", SYSTEM_NAMESPACE, "kube-scheduler", False),
    ("executor", "update", "coordination.k8s.io", "leases", "", "kube-system", "kubernaut-executor", False),
    ("orchestrator", "create", "kubernaut.ai", "workflowexecutions", "", "team-a", "", True),
    ("orchestrator", "create", "kubernaut.ai", "notificationrequests", "", "team-a", "", True),
    ("orchestrator", "patch", "kubernaut.ai", "remediationrequests", "status", "team-a", "rr-1", True),
    ("orchestrator", "patch", "kubernaut.ai", "remediationrequests", "", "team-a", "rr-1", False),
    ("orchestrator", "update", "kubernaut.ai", "remediationrequests", "finalizers", "team-a", "rr-1", True),
    ("orchestrator", "delete", "kubernaut.ai", "workflowexecutions", "", "team-a", "we-1", False),
    ("orchestrator", "create", "kubernaut.ai", "remediationapprovalrequests", "", "team-a", "", True),
    ("orchestrator", "patch", "kubernaut.ai", "remediationapprovalrequests", "status", "team-a", "rar-1", True),
    ("orchestrator", "patch", "kubernaut.ai", "remediationapprovalrequests", "", "team-a", "rar-1", False),
    ("orchestrator", "create", "tekton.dev", "pipelineruns", "", EXECUTION_NAMESPACE, "", True),  # dry runs only
    ("orchestrator", "create", "tekton.dev", "pipelineruns", "", "team-a", "", False),
    ("orchestrator", "list", "tekton.dev", "pipelineruns", "", EXECUTION_NAMESPACE, "", True),
    ("orchestrator", "watch", "tekton.dev", "pipelineruns", "", EXECUTION_NAMESPACE, "", True),
    ("orchestrator", "watch", "tekton.dev", "pipelineruns", "", "", "", False),
    ("orchestrator", "watch", "batch", "jobs", "", EXECUTION_NAMESPACE, "", True),
    ("orchestrator", "create", "batch", "jobs", "", EXECUTION_NAMESPACE, "", True),  # dry runs only
    ("orchestrator", "create", "batch", "jobs", "", "team-a", "", False),
    ("orchestrator", "list", "", "pods", "", EXECUTION_NAMESPACE, "", False),
    ("orchestrator", "create", "", "events", "", "team-a", "", False),
    ("orchestrator", "watch", "", "namespaces", "", "", "", True),
    ("orchestrator", "watch", "", "nodes", "", "", "", True),
    ("orchestrator", "patch", "", "namespaces", "", "", "team-a", False),
    ("orchestrator", "watch", "", "configmaps", "", SYSTEM_NAMESPACE, "", True),
    ("orchestrator", "watch", "", "configmaps", "", "team-a", "", False),
    ("orchestrator", "patch", "", "configmaps", "", SYSTEM_NAMESPACE, "kubernaut-breaker", False),
    ("notifier", "get", "", "secrets", "", SYSTEM_NAMESPACE, "kubernaut-notification-channels", True),
    ("notifier", "get", "", "secrets", "", SYSTEM_NAMESPACE, "kubernaut-gateway-token", False),
    ("notifier", "list", "", "secrets", "", SYSTEM_NAMESPACE, "", False),
    ("notifier", "patch", "kubernaut.ai", "notificationrequests", "status", "team-a", "nr-1", True),
    ("notifier", "create", "kubernaut.ai", "workflowexecutions", "", "team-a", "", False),
    ("gateway", "create", "kubernaut.ai", "remediationrequests", "", SYSTEM_NAMESPACE, "", True),
    ("gateway", "create", "kubernaut.ai", "remediationrequests", "", "team-a", "", False),
    ("gateway", "get", "", "secrets", "", SYSTEM_NAMESPACE, "kubernaut-gateway-token", True),
    ("gateway", "watch", "kubernaut.ai", "workflowexecutions", "", "", "", False),
    ("workflow-runner", "get", "", "pods", "", EXECUTION_NAMESPACE, "", False),
    ("workflow-runner", "create", "tekton.dev", "pipelineruns", "", EXECUTION_NAMESPACE, "", False),
]


async def allowed(admin: AsyncClient, user: str, groups: list[str], attributes: ResourceAttributes) -> bool:
    review = SubjectAccessReview(
        metadata=ObjectMeta(), spec=SubjectAccessReviewSpec(user=user, groups=groups, resourceAttributes=attributes)
    )
    result = await admin.create(review)
    return bool(result.status and result.status.allowed)


async def test_each_component_has_exactly_the_rights_its_code_uses(cluster: ProductionCluster) -> None:
    wrong = []
    for who, verb, group, resource, subresource, namespace, name, expected in ACCESS:
        user, groups = sa(who)
        if who == "workflow-runner":
            user = f"system:serviceaccount:{EXECUTION_NAMESPACE}:kubernaut-workflow-runner"
        attributes = ResourceAttributes(
            verb=verb,
            group=group,
            resource=resource,
            subresource=subresource or None,
            namespace=namespace or None,
            name=name or None,
        )
        if await allowed(cluster.admin, user, groups, attributes) != expected:
            wrong.append((who, verb, f"{resource}/{subresource}" if subresource else resource, namespace, name))
    assert wrong == [], f"access differs from the intent for: {wrong}"


async def phase(cluster: ProductionCluster, name: str, namespace: str, *phases: str) -> dict[str, Any] | None:
    status = await rr_status(cluster.admin, name, namespace)
    return status if status.get("overallPhase") in phases else None


async def create_rr(cluster: ProductionCluster, name: str, namespace: str, target: str, bundle: str) -> None:
    body = rr_manifest(
        name, namespace, target={"kind": "Deployment", "name": target, "namespace": namespace}, bundle=bundle
    )
    await cluster.admin.create(RemediationRequestResource(body))


async def wait_phase(cluster: ProductionCluster, name: str, namespace: str, *phases: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        return await phase(cluster, name, namespace, *phases)

    return await eventually(reached, timeout=180, interval=0.1, what=f"{name} in {' or '.join(phases)}")


@contextlib.asynccontextmanager
async def controllers_as_service_accounts(
    cluster: ProductionCluster, directory: Path
) -> AsyncIterator[list[OperatorProcess]]:
    console = ["console"]
    extra = {"notifications": {"critical": console, "high": console, "medium": console, "low": console}}
    procs = []
    try:
        for component in ("orchestrator", "executor", "notifier"):
            config = write_config(
                directory / f"{component}.yaml", audit_db=directory / f"{component}.db", cooldown="2s", extra=extra
            )
            kubeconfig = await cluster.kubeconfig_for(component)
            procs.append(
                OperatorProcess(component, kubeconfig, config, component, directory / f"{component}.log").start()
            )
        for proc in procs:
            await proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop_now()


async def bind_clearer(admin: AsyncClient, user: str) -> None:
    await admin.create(
        ClusterRoleBinding(
            metadata=ObjectMeta(name=f"clearer-{user}"),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name="kubernaut-execution-block-clearer"
            ),
            subjects=[Subject(kind="User", name=user, apiGroup="rbac.authorization.k8s.io")],
        )
    )


async def annotate(client: AsyncClient, name: str, namespace: str, values: dict[str, str]) -> None:
    await client.patch(
        WorkflowExecutionResource,
        name,
        {"metadata": {"annotations": values}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )


async def test_remediations_and_blocks_with_the_shipped_rbac(cluster: ProductionCluster, tmp_path: Path) -> None:
    namespace = await cluster.namespace("team")
    webhook = await start_dev_webhook(cluster.admin, tmp_path)
    people = {u: make_client(user_kubeconfig(cluster.plane, u, tmp_path)) for u in ("alice", "bob", "mallory")}
    await bind_clearer(cluster.admin, "alice")
    await bind_clearer(cluster.admin, "bob")
    try:
        async with controllers_as_service_accounts(cluster, tmp_path) as procs:
            # Happy path.
            await create_rr(cluster, "rr-ok", namespace, "web", played(SUCCEED))
            done = await wait_phase(cluster, "rr-ok", namespace, "Completed", "Failed")
            assert done["overallPhase"] == "Completed", done

            async def reported() -> bool:  # Events follow the status writes they describe
                reasons = {reason for _, reason, _ in await events_for(cluster.admin, namespace, "we-rr-ok")}
                return {"PipelineRunCreated", "WorkflowCompleted"} <= reasons

            await eventually(reported, what="the PipelineRunCreated and WorkflowCompleted Events of we-rr-ok")

            # Blocked while the target is busy, then runs by itself once the lock is released.
            await create_rr(cluster, "rr-busy-1", namespace, "api", played(SLOW))
            await wait_phase(cluster, "rr-busy-1", namespace, "Executing")
            await create_rr(cluster, "rr-busy-2", namespace, "api", played(SUCCEED))
            blocked = await wait_phase(cluster, "rr-busy-2", namespace, "Blocked")
            assert blocked["blockReason"] == "ResourceBusy"
            assert blocked["blockingWorkflowExecution"] == "we-rr-busy-1"
            assert (await wait_phase(cluster, "rr-busy-2", namespace, "Completed", "Failed"))[
                "overallPhase"
            ] == "Completed"

            # A workflow fails while executing: the next request on that target is refused until a
            # person clears the block; the manual-review notification is delivered.
            await create_rr(cluster, "rr-fail", namespace, "db", played(FAIL))
            failed = await wait_phase(cluster, "rr-fail", namespace, "Failed")
            assert failed["failurePhase"] == "workflow_execution", failed
            await create_rr(cluster, "rr-after", namespace, "db", played(SUCCEED))
            refused = await wait_phase(cluster, "rr-after", namespace, "Failed")
            assert refused["skipReason"] == "PreviousExecutionFailed"
            assert refused["blockingWorkflowExecution"] == "we-rr-fail"

            async def delivered() -> bool:
                found = [
                    n.to_dict() async for n in cluster.admin.list(NotificationRequestResource, namespace=namespace)
                ]
                return bool(found) and all((n.get("status") or {}).get("phase") == "Sent" for n in found)

            await eventually(delivered, timeout=120, what="manual-review notifications sent")

            # Clearing: without the verbs, 403; with them, the webhook records who did it.
            with pytest.raises(ApiError) as forbidden:
                await annotate(people["mallory"], "we-rr-fail", namespace, {CLEAR: "trust me"})
            assert forbidden.value.status.code == 403
            assert 'User "mallory" cannot patch resource "workflowexecutions"' in forbidden.value.status.message
            with pytest.raises(ApiError, match="cannot be set or changed by hand"):
                await annotate(
                    people["bob"],
                    "we-rr-fail",
                    namespace,
                    {CLEAR: "db restored", "kubernaut.ai/execution-block-cleared-by": "alice"},
                )
            await annotate(people["alice"], "we-rr-fail", namespace, {CLEAR: "db restored from backup"})

            async def cleared() -> dict[str, Any] | None:
                wfe = await cluster.admin.get(WorkflowExecutionResource, "we-rr-fail", namespace=namespace)
                return (wfe.to_dict().get("status") or {}).get("blockClearance")

            clearance = await eventually(cleared, timeout=120, what="block clearance recorded")
            assert clearance["clearedBy"] == "alice"
            assert clearance["clearReason"] == "db restored from backup"
            assert clearance["clearMethod"] == "Annotation"

            await create_rr(cluster, "rr-retry", namespace, "db", played(SUCCEED))
            retried = await wait_phase(cluster, "rr-retry", namespace, "Completed", "Failed")
            assert retried["overallPhase"] == "Completed", retried

            for proc in procs:
                assert "forbidden" not in proc.log().lower(), (
                    f"{proc.name} was refused something:\n{proc.log()[-3000:]}"
                )
    finally:
        for client in people.values():
            await client.close()
        await webhook.stop(cluster.admin)


async def test_the_gateway_as_its_service_account(cluster: ProductionCluster, tmp_path: Path) -> None:
    """`kubernaut run --controllers gateway`: token from its one readable Secret, requests created in
    its own namespace."""
    token = "t0k3n-for-alertmanager"
    await cluster.admin.create(
        Secret(
            metadata=ObjectMeta(name="kubernaut-gateway-token", namespace=SYSTEM_NAMESPACE),
            stringData={"token": token},
        )
    )
    port = free_port()
    gateway = {"listen": f"127.0.0.1:{port}", "bearerTokenSecret": f"{SYSTEM_NAMESPACE}/kubernaut-gateway-token:token"}
    config = write_config(tmp_path / "gateway.yaml", audit_db=tmp_path / "gateway.db", extra={"gateway": gateway})
    proc = OperatorProcess(
        "gateway", await cluster.kubeconfig_for("gateway"), config, "gateway", tmp_path / "gateway.log"
    ).start()
    try:
        await proc.wait_ready()
        payload = (Path(__file__).parents[1] / "unit" / "fixtures" / "alertmanager_firing.json").read_bytes()

        def post(bearer: str) -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/signals/alertmanager",
                data=payload,
                headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        assert await asyncio.to_thread(post, "wrong") == 401
        assert await asyncio.to_thread(post, token) in (200, 201, 202)
        found = [r.to_dict() async for r in cluster.admin.list(RemediationRequestResource, namespace=SYSTEM_NAMESPACE)]
        firing = [a for a in json.loads(payload)["alerts"] if a["status"] == "firing"]
        assert sorted(r["spec"]["signalName"] for r in found) == sorted(a["labels"]["alertname"] for a in firing)
        assert "forbidden" not in proc.log().lower(), proc.log()[-3000:]
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(15) == 0
    finally:
        proc.stop_now()
