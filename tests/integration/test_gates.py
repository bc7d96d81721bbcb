"""The safety gates end to end on a real API server, with the executor and the Tekton stand-in:
opt-in scope, the concurrency limit, and the circuit breaker with its reset through the CLI and
the admission webhook."""

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import ConfigMap
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.devcluster.webhook import start_dev_webhook
from kubernaut.domain.gates import MANAGED_LABEL
from kubernaut.kube.client import make_client, patch_object
from kubernaut.kube.resources import (
    ConfigMapResource,
    NamespaceResource,
    NotificationRequestResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)
from tests.integration.harness import (
    create_execution_namespace,
    create_namespace,
    eventually,
    get_or_none,
    running,
    settings_for,
)
from tests.integration.operator_process import (
    EXECUTION_NAMESPACE,
    SYSTEM_NAMESPACE,
    ProductionCluster,
    cluster,
    user_kubeconfig,
)
from tests.integration.rr import rr_manifest, rr_status
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton

__all__ = ["cluster"]  # the fixture, imported for pytest

SUCCEED = "succeed:1tasks-1s"
FAIL = "fail:task1of1-0s"
RESET_BY = "kubernaut.ai/breaker-reset-by"


async def phase_of(kube: AsyncClient, name: str, namespace: str, *phases: str) -> dict[str, Any] | None:
    status = await rr_status(kube, name, namespace)
    return status if status.get("overallPhase") in phases else None


async def wait_phase(kube: AsyncClient, name: str, namespace: str, *phases: str, timeout: float = 30) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        return await phase_of(kube, name, namespace, *phases)

    return await eventually(reached, timeout=timeout, what=f"{name} in {' or '.join(phases)}")


def target(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "Deployment", "name": name, "namespace": namespace}


# -- opt-in scope --------------------------------------------------------------------------------------


async def test_an_unlabelled_namespace_blocks_and_labelling_it_runs_the_request(
    kube: AsyncClient, kubeconfig: Path
) -> None:
    exec_ns = await create_execution_namespace(kube)
    team = await create_namespace(kube, "team", managed=False)
    settings = settings_for(exec_ns, execution={"cooldown": "1s"})
    assert settings.scope.require_managed_label  # the default of `kubernaut run`
    async with running(kubeconfig, settings, ("orchestrator", "executor")):
        await kube.create(RemediationRequestResource(rr_manifest("rr-1", team, target=target(team, "api"))))
        blocked = await wait_phase(kube, "rr-1", team, "Blocked")
        assert blocked["blockReason"] == "UnmanagedResource"
        assert f"Namespace {team} does not carry the label {MANAGED_LABEL}=true" in blocked["blockMessage"]
        assert blocked["blockedUntil"]  # when it gives up: creation + scope.unmanagedTimeout
        assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-1", team) is None

        labelled = time.monotonic()
        await patch_object(kube, NamespaceResource, team, None, {"metadata": {"labels": {MANAGED_LABEL: "true"}}})

        async def execution() -> Any:
            return await get_or_none(kube, WorkflowExecutionResource, "we-rr-1", team)

        await eventually(execution, timeout=5, interval=0.05, what="we-rr-1 created after the label")
        waited = time.monotonic() - labelled
        print(f"\nlabel to WorkflowExecution: {waited:.2f}s")
        assert waited < 2.0
        done = await wait_phase(kube, "rr-1", team, "Completed", "Failed")
        assert done["overallPhase"] == "Completed", done


# -- rate limits ---------------------------------------------------------------------------------------


async def test_fifteen_requests_against_three_concurrent_executions(kube: AsyncClient, kubeconfig: Path) -> None:
    exec_ns = await create_execution_namespace(kube)
    team = await create_namespace(kube, "team")
    settings = settings_for(exec_ns, execution={"cooldown": "1s"}, limits={"maxConcurrentExecutions": 3})
    names = [f"rr-{i:02d}" for i in range(15)]
    active: set[str] = set()
    most = 0

    async def watch() -> None:
        # One watch stream is in resourceVersion order: an execution's end is seen before any
        # execution created because of it.
        nonlocal most
        watcher = make_client(kubeconfig)
        try:
            async for type_, obj in watcher.watch(WorkflowExecutionResource, namespace=team):
                body = obj.to_dict()
                name = body["metadata"]["name"]
                if type_ == "DELETED" or (body.get("status") or {}).get("phase") in ("Completed", "Failed"):
                    active.discard(name)
                else:
                    active.add(name)
                most = max(most, len(active))
        finally:
            await watcher.close()

    watching = asyncio.create_task(watch())
    try:
        async with running(kubeconfig, settings, ("orchestrator", "executor")):
            started = time.monotonic()
            for index, name in enumerate(names):
                manifest = rr_manifest(name, team, target=target(team, f"app-{index}"), bundle=played(SUCCEED))
                await kube.create(RemediationRequestResource(manifest))

            async def limited() -> list[str] | None:
                found = [
                    name for name in names if (await rr_status(kube, name, team)).get("blockReason") == "RateLimited"
                ]
                return found or None

            waiting = await eventually(limited, timeout=20, what="a request RateLimited")
            status = await rr_status(kube, waiting[0], team)
            assert "limits.maxConcurrentExecutions 3" in status["blockMessage"]

            async def all_done() -> list[str] | None:
                phases = [(await rr_status(kube, name, team)).get("overallPhase") for name in names]
                return phases if all(phase in ("Completed", "Failed") for phase in phases) else None

            phases = await eventually(all_done, timeout=90, what="all 15 requests finished")
            print(f"\n15 requests at 3 concurrent: {time.monotonic() - started:.1f}s, at most {most} active")
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert phases == ["Completed"] * 15
    assert 1 <= most <= 3


# -- the circuit breaker ---------------------------------------------------------------------------------


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kubernaut",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def bind_resetter(admin: AsyncClient, user: str) -> None:
    await admin.create(
        RoleBinding.from_dict(
            {
                "metadata": {"name": f"breaker-resetter-{user}", "namespace": SYSTEM_NAMESPACE},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "kubernaut-breaker-resetter",
                },
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            }
        )
    )


async def test_five_execution_failures_open_the_breaker_until_a_person_resets_it(
    cluster: ProductionCluster, tmp_path: Path
) -> None:
    admin = cluster.admin
    team = await cluster.namespace("team")
    # What an install puts there: the breaker's ConfigMap (the chart and config/manager ship it).
    await admin.create(
        ConfigMap.from_dict(
            {
                "metadata": {
                    "name": "kubernaut-breaker",
                    "namespace": SYSTEM_NAMESPACE,
                    "labels": {"kubernaut.ai/breaker": "true"},
                }
            }
        )
    )
    webhook = await start_dev_webhook(admin, tmp_path)
    await bind_resetter(admin, "alice")
    alice = user_kubeconfig(cluster.plane, "alice", tmp_path)
    audit = MemoryAuditSink()
    settings = settings_for(EXECUTION_NAMESPACE, execution={"cooldown": "1s"}, breaker={"failureThreshold": 5})
    try:
        async with (
            running(
                cluster.plane.kubeconfig,
                settings,
                ("orchestrator", "executor"),
                audit=audit,
                namespaces=(team, EXECUTION_NAMESPACE),
            ),
        ):
            for i in range(5):
                manifest = rr_manifest(f"rr-fail-{i}", team, target=target(team, f"app-{i}"), bundle=played(FAIL))
                await admin.create(RemediationRequestResource(manifest))
            for i in range(5):
                failed = await wait_phase(admin, f"rr-fail-{i}", team, "Completed", "Failed")
                assert failed["overallPhase"] == "Failed", failed

            await admin.create(
                RemediationRequestResource(
                    rr_manifest("rr-6", team, target=target(team, "app-6"), bundle=played(SUCCEED))
                )
            )
            blocked = await wait_phase(admin, "rr-6", team, "Blocked")
            assert blocked["blockReason"] == "CircuitOpen", blocked
            assert "kubernaut breaker reset" in blocked["blockMessage"]

            async def breaker_notices() -> list[dict[str, Any]] | None:
                found = [
                    obj.to_dict()
                    async for obj in admin.list(NotificationRequestResource, namespace=SYSTEM_NAMESPACE)
                    if obj.to_dict()["metadata"]["name"].startswith("breaker-open-")
                ]
                return found or None

            (notice,) = await eventually(breaker_notices, what="the breaker's notification")
            assert notice["spec"]["priority"] == "critical"
            code, out = await run_cli("breaker", "status", "--kubeconfig", str(cluster.plane.kubeconfig))
            assert code == 0, out
            assert "State:               Open" in out, out
            assert "Last reset:          never" in out, out
            assert (await rr_status(admin, "rr-6", team))["overallPhase"] == "Blocked"

            # A hand-set identity is refused by the webhook, and changes nothing.
            alice_client = make_client(alice)
            try:
                with pytest.raises(ApiError) as refused:
                    await patch_object(
                        alice_client,
                        ConfigMapResource,
                        "kubernaut-breaker",
                        SYSTEM_NAMESPACE,
                        {
                            "metadata": {
                                "annotations": {
                                    RESET_BY: "someone-else",
                                    "kubernaut.ai/breaker-reset-at": "2030-01-01T00:00:00+00:00",
                                }
                            }
                        },
                    )
            finally:
                await alice_client.close()
            assert refused.value.status.code == 403
            assert "cannot be set or changed by hand" in (refused.value.status.message or "")
            config_map = await get_or_none(admin, ConfigMapResource, "kubernaut-breaker", SYSTEM_NAMESPACE)
            assert RESET_BY not in ((config_map or {}).get("metadata") or {}).get("annotations", {})

            code, out = await run_cli("breaker", "reset", "--reason", "registry fixed", "--kubeconfig", str(alice))
            assert code == 0, out
            assert "Circuit breaker reset by alice" in out, out
            done = await wait_phase(admin, "rr-6", team, "Completed", "Failed")
            assert done["overallPhase"] == "Completed", done

            code, out = await run_cli("breaker", "status", "--kubeconfig", str(cluster.plane.kubeconfig))
            assert "State:               Closed" in out, out
            assert "by alice" in out, out
            assert "Reset reason:        registry fixed" in out, out

        (event,) = audit.of_type("orchestrator.breaker.reset")
        assert (event.actor_type, event.actor_id) == ("user", "alice")
        assert event.event_data["reason"] == "registry fixed"
        notices = [obj async for obj in admin.list(NotificationRequestResource, namespace=SYSTEM_NAMESPACE)]
        assert len([n for n in notices if n.to_dict()["metadata"]["name"].startswith("breaker-open-")]) == 1
    finally:
        await webhook.stop(admin)
