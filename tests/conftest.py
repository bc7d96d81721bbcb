"""Shared fixtures: the session's real control planes (one with Tekton, one without its controllers)
and bundle registry, a fresh namespace per test."""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.devcluster.registry import start_registry
from tests.integration import tekton_support
from tests.integration.harness import MANAGED, STATE_KUBECONFIG, TEST_NAMESPACES, admin_client, track_namespace
from tests.integration.tekton_support import TektonCluster, started_tekton_cluster, tekton_binaries, wants_tekton

pytest_plugins = ["tests.conftest_postgres"]


_SUITES = ("unit", "component", "integration", "e2e", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its suite, the folder it lives in (`-m integration` and so on)."""
    root = Path(__file__).parent
    for item in items:
        suite = item.path.relative_to(root).parts[0]
        if suite in _SUITES:
            item.add_marker(getattr(pytest.mark, suite))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The local control plane without Tekton's controllers (etcd, kube-apiserver, controller manager,
    scheduler, kwok), started once for the whole session and always stopped. Tests that write a
    PipelineRun's status themselves, to pin an exact case, run here."""
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def bundle_registry(control_plane: ControlPlane) -> Iterator[str]:
    """The session's local OCI registry, which every control plane's Tekton pulls bundles from."""
    registry = start_registry(control_plane, tekton_binaries().crane)
    tekton_support.REGISTRY.append(registry)
    yield registry
    tekton_support.REGISTRY.remove(registry)


@pytest.fixture(scope="session")
def tekton_cluster(tmp_path_factory: pytest.TempPathFactory, bundle_registry: str) -> Iterator[TektonCluster]:
    """The session's control plane with real Tekton, for the tests marked `tekton`."""
    with started_tekton_cluster(tmp_path_factory.mktemp("tekton-plane"), bundle_registry) as cluster:
        yield cluster


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def plain_kube(control_plane: ControlPlane) -> AsyncIterator[AsyncClient]:
    async with admin_client(control_plane, tekton_runs=False) as client:
        yield client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tekton_kube(tekton_cluster: TektonCluster) -> AsyncIterator[AsyncClient]:
    """A client of the Tekton cluster with kubernaut's CRDs installed (Tekton's are its own)."""
    async with admin_client(tekton_cluster.plane, tekton_runs=True) as client:
        yield client


@pytest.fixture(scope="module")
def kubeconfig(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The kubeconfig of the module's control plane: with real Tekton if the module is marked `tekton`."""
    if wants_tekton(request):
        path = request.getfixturevalue("tekton_cluster").plane.kubeconfig
    else:
        path = request.getfixturevalue("control_plane").kubeconfig
    STATE_KUBECONFIG.append(path)
    yield path
    STATE_KUBECONFIG.remove(path)


@pytest.fixture(scope="module")
def kube(request: pytest.FixtureRequest, kubeconfig: Path) -> AsyncClient:
    """An admin client of the test's control plane, with kubernaut's CRDs installed."""
    client: AsyncClient = request.getfixturevalue("tekton_kube" if wants_tekton(request) else "plain_kube")
    return client


@pytest.fixture(autouse=True)
def _forget_test_namespaces() -> Iterator[None]:
    TEST_NAMESPACES.clear()
    yield
    TEST_NAMESPACES.clear()


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(kube: AsyncClient) -> AsyncIterator[str]:
    """A fresh namespace for one test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await kube.create(Namespace(metadata=ObjectMeta(name=name, labels=MANAGED)))
    yield track_namespace(name)
    if not os.environ.get("KUBERNAUT_KEEP_NAMESPACES"):
        await kube.delete(Namespace, name)
