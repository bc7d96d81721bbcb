"""`helm install` of charts/kubernaut into a real API server (RBAC on, no kubelet: no pods run):
the operator's objects are accepted and in place, every ServiceAccount has exactly the rights of the
shipped RBAC, the renders with default and production values pass a server-side dry-run, and the
controllers running with the installed ServiceAccounts' credentials carry a request to the end."""

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.authorization_v1 import ResourceAttributes
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Secret

from kubernaut.kube.client import install_crds, make_client
from kubernaut.kube.resources import (
    NotificationRequestResource,
    RemediationRequestResource,
    RemediationWorkflowResource,
    WorkflowExecutionResource,
)
from tests.helm_chart import CHART, NAMESPACE, PRODUCTION_VALUES, RELEASE, helm, template_args
from tests.integration.harness import eventually
from tests.integration.operator_process import ProductionCluster
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import played, started_tekton_cluster
from tests.integration.test_rbac import ACCESS, allowed, controllers_as_service_accounts, sa, wait_phase

FOREIGN_CRDS = Path(__file__).parent / "foreign_crds.yaml"
# Without a kubelet the generated-CA path is the one that needs nothing else in the cluster.
KINDS = (
    RemediationRequestResource,
    WorkflowExecutionResource,
    NotificationRequestResource,
    RemediationWorkflowResource,
)
INSTALL_SETS = ("--set", "webhook.certManager.enabled=false")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def installed(tmp_path_factory: pytest.TempPathFactory, bundle_registry: str) -> AsyncIterator[ProductionCluster]:
    directory = tmp_path_factory.mktemp("helm")
    args = ("--enable-admission-plugins=OwnerReferencesPermissionEnforcement",)
    with started_tekton_cluster(directory / "plane", bundle_registry, *args) as tekton:
        plane = tekton.plane
        admin = make_client(plane.kubeconfig)
        try:
            # What the chart expects to find: Tekton, and the release namespace.
            await install_crds(admin, [FOREIGN_CRDS])
            await admin.create(Namespace(metadata=ObjectMeta(name=NAMESPACE)))
            helm("install", RELEASE, CHART, f"--namespace={NAMESPACE}", *INSTALL_SETS, kubeconfig=plane.kubeconfig)
            # The chart's CRDs become served: kubernaut's kinds can be listed.
            await eventually(lambda: _served(admin), what="every kubernaut kind listed through the chart's CRDs")
            yield ProductionCluster(plane=plane, admin=admin, directory=directory)
        finally:
            await admin.close()


async def test_install_brings_up_the_operators_objects(installed: ProductionCluster) -> None:
    admin = installed.admin
    status = helm("status", RELEASE, f"--namespace={NAMESPACE}", kubeconfig=installed.plane.kubeconfig)
    assert "STATUS: deployed" in status.stdout
    notes = helm("get", "notes", RELEASE, f"--namespace={NAMESPACE}", kubeconfig=installed.plane.kubeconfig).stdout
    assert "Secret kubernaut-gateway-token (key token): the gateway's bearer token" in notes, notes
    assert "and Tekton Pipelines in the cluster.\n" in notes, notes  # no cert-manager needed here
    for component in ("orchestrator", "executor", "notifier", "gateway"):
        deployment = await admin.get(Deployment, f"kubernaut-{component}", namespace=NAMESPACE)
        assert deployment.spec is not None
        assert deployment.spec.replicas == 2
        assert deployment.spec.template.spec is not None
        container = deployment.spec.template.spec.containers[0]
        assert container.image == "ghcr.io/kubernaut/kubernaut-py:0.1.0"
        assert f"--controllers={component}" in (container.args or [])
    ca = await _webhook_ca(admin)
    for kind in (MutatingWebhookConfiguration, ValidatingWebhookConfiguration):
        configuration = await admin.get(kind, "kubernaut-admission")
        assert {w.clientConfig.caBundle for w in configuration.webhooks or []} == {ca}


async def _served(admin: AsyncClient) -> bool:
    """Every kind of the chart's CRDs can be listed (they are empty: nothing created them yet)."""
    try:
        for kind in KINDS:
            assert [obj async for obj in admin.list(kind)] == []
    except ApiError as exc:  # 404 before a CRD is established, 429 while its storage starts
        if exc.status.code in (404, 429):
            return False
        raise
    return True


async def _webhook_ca(admin: AsyncClient) -> str:
    secret = await admin.get(Secret, "kubernaut-webhook-cert", namespace=NAMESPACE)
    assert secret.data is not None
    return str(secret.data["ca.crt"])


async def test_an_upgrade_keeps_the_generated_webhook_certificate(installed: ProductionCluster) -> None:
    before = await _webhook_ca(installed.admin)
    helm("upgrade", RELEASE, CHART, f"--namespace={NAMESPACE}", *INSTALL_SETS, kubeconfig=installed.plane.kubeconfig)
    assert await _webhook_ca(installed.admin) == before


async def test_each_installed_account_has_exactly_the_shipped_rights(installed: ProductionCluster) -> None:
    wrong = []
    for who, verb, group, resource, subresource, namespace, name, expected in ACCESS:
        user, groups = sa(who)
        if who == "workflow-runner":
            user = "system:serviceaccount:kubernaut-workflows:kubernaut-workflow-runner"
        attributes = ResourceAttributes(
            verb=verb,
            group=group,
            resource=resource,
            subresource=subresource or None,
            namespace=namespace or None,
            name=name or None,
        )
        if await allowed(installed.admin, user, groups, attributes) != expected:
            wrong.append((who, verb, resource, subresource, namespace, name))
    assert wrong == [], f"access differs from config/rbac for: {wrong}"


@pytest.mark.parametrize("values", [(), (PRODUCTION_VALUES,)], ids=["default", "production"])
def test_the_rendered_chart_passes_a_server_side_dry_run(installed: ProductionCluster, values: tuple[Path]) -> None:
    rendered = helm(*template_args(*values)).stdout
    # Over the installed release: another field manager, so conflicting fields are taken over (dry-run).
    result = subprocess.run(
        [
            *("kubectl", f"--kubeconfig={installed.plane.kubeconfig}", "apply", "--server-side", "--force-conflicts"),
            *("--dry-run=server", "--field-manager=dry-run", "-f", "-"),
        ],
        input=rendered,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == rendered.count("\nkind: ") + rendered.startswith("kind: "), result.stdout


async def test_controllers_with_the_installed_credentials_carry_a_request_to_the_end(
    installed: ProductionCluster, tmp_path: Path
) -> None:
    namespace = await installed.namespace("team")
    async with controllers_as_service_accounts(installed, tmp_path):
        body = rr_manifest(
            "rr-helm",
            namespace,
            target={"kind": "Deployment", "name": "web", "namespace": namespace},
            bundle=played("succeed:1tasks-4s"),
        )
        await installed.admin.create(RemediationRequestResource(body))
        await wait_phase(installed, "rr-helm", namespace, "Executing")
        done = await wait_phase(installed, "rr-helm", namespace, "Completed", "Failed")
        assert done["overallPhase"] == "Completed", done
