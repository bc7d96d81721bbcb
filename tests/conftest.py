"""Shared fixtures: one real control plane per test session, a fresh namespace per test."""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from kubernaut.devcluster.binaries import find_tekton_binaries
from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.devcluster.registry import start_registry
from kubernaut.devcluster.tekton import TektonInfo, start_tekton
from kubernaut.kube.client import install_crds, make_client
from kubernaut.paths import crd_paths, project_dir
from tests.integration.harness import MANAGED, STATE_KUBECONFIG, TEST_NAMESPACES, track_namespace

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
    """The local control plane (etcd, kube-apiserver, controller manager, scheduler, kwok), started once
    for the whole session and always stopped."""
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Iterator[Path]:
    STATE_KUBECONFIG.append(control_plane.kubeconfig)
    yield control_plane.kubeconfig
    STATE_KUBECONFIG.remove(control_plane.kubeconfig)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kube(kubeconfig: Path) -> AsyncIterator[AsyncClient]:
    client = make_client(kubeconfig)
    await install_crds(client, crd_paths())
    yield client
    await client.close()


@dataclass(frozen=True)
class TektonCluster:
    """A control plane of its own running real Tekton (controller and resolvers) and a registry."""

    plane: ControlPlane
    tekton: TektonInfo
    registry: str  # host:port, plain HTTP


@pytest.fixture(scope="module")
def tekton_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TektonCluster]:
    """Real Tekton on a control plane apart from the session's (whose Tekton CRDs are the stand-in's),
    for one test module."""
    binaries = find_tekton_binaries()
    if binaries is None:  # a cold build takes a quarter of an hour: longer than a test may take
        pytest.fail("Tekton's binaries are not built: run `.venv/bin/python -m kubernaut.devcluster.binaries --tekton`")
    plane = ControlPlane(tmp_path_factory.mktemp("tekton-plane"))
    plane.start()
    try:
        info = start_tekton(plane, binaries)
        registry = start_registry(plane, binaries.crane)
        STATE_KUBECONFIG.append(plane.kubeconfig)
        yield TektonCluster(plane, info, registry)
    finally:
        if plane.kubeconfig in STATE_KUBECONFIG:
            STATE_KUBECONFIG.remove(plane.kubeconfig)
        plane.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tekton_kube(tekton_cluster: TektonCluster) -> AsyncIterator[AsyncClient]:
    """A client of the Tekton cluster with kubernaut's CRDs installed (Tekton's are its own)."""
    client = make_client(tekton_cluster.plane.kubeconfig)
    await install_crds(client, [project_dir() / "config" / "crd" / "bases"])
    yield client
    await client.close()


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
