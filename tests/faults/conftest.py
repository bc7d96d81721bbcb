"""Fault tests run on a control plane of their own: they restart its API server and etcd, and load
it hard, without disturbing the rest of the suite. `--long` selects the long variants."""

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from lightkube import AsyncClient

from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.devcluster.tekton import restart_exited
from tests.faults.support import clear_cluster
from tests.integration.harness import STATE_KUBECONFIG, admin_client
from tests.integration.tekton_support import started_tekton_cluster, wants_tekton

log = logging.getLogger(__name__)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False, help="run the long fault-injection variants")


_LONG = [False]


def pytest_configure(config: pytest.Config) -> None:
    _LONG[0] = bool(config.getoption("--long", default=False))


def long_run() -> bool:
    """Whether the long variants run (`--long`); read at import by tests that size their examples."""
    return _LONG[0]


@dataclass(frozen=True)
class Scale:
    """How much of each campaign to run: the short variant in `make test`, the long one in `make faults`."""

    long: bool
    remediations: int
    kills: int
    batch_remediations: int


@pytest.fixture(scope="session")
def scale() -> Scale:
    if long_run():
        return Scale(long=True, remediations=200, kills=12, batch_remediations=60)
    return Scale(long=False, remediations=30, kills=3, batch_remediations=12)


@pytest.fixture(scope="package")
def fault_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Without Tekton's controllers, for tests that play Tekton themselves."""
    plane = ControlPlane(tmp_path_factory.mktemp("fault-plane"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="package")
def fault_tekton_plane(tmp_path_factory: pytest.TempPathFactory, bundle_registry: str) -> Iterator[ControlPlane]:
    """With real Tekton, for the modules marked `tekton`. Tekton's processes exit when the API server
    restarts under them; they are started again, as a cluster's kubelet restarts them."""
    with started_tekton_cluster(tmp_path_factory.mktemp("fault-tekton-plane"), bundle_registry) as cluster:
        stop = threading.Event()
        supervisor = threading.Thread(target=_keep_tekton_running, args=(cluster.plane, stop), daemon=True)
        supervisor.start()
        try:
            yield cluster.plane
        finally:
            stop.set()
            supervisor.join(timeout=180)


def _keep_tekton_running(plane: ControlPlane, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            restart_exited(plane)
        except Exception as exc:  # the API server may be down right now: try again
            log.warning("Tekton not started again yet: %s", exc)


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def fault_plain_kube(fault_plane: ControlPlane) -> AsyncIterator[AsyncClient]:
    async with admin_client(fault_plane, tekton_runs=False) as client:
        yield client


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def fault_tekton_kube(fault_tekton_plane: ControlPlane) -> AsyncIterator[AsyncClient]:
    async with admin_client(fault_tekton_plane, tekton_runs=True) as client:
        yield client


@pytest.fixture(scope="module")
def fault_plane_of_module(request: pytest.FixtureRequest) -> ControlPlane:
    """The fault plane the module runs on: with real Tekton if it is marked `tekton`."""
    plane: ControlPlane = request.getfixturevalue("fault_tekton_plane" if wants_tekton(request) else "fault_plane")
    return plane


@pytest.fixture(scope="module")
def kubeconfig(fault_plane_of_module: ControlPlane) -> Iterator[Path]:
    STATE_KUBECONFIG.append(fault_plane_of_module.kubeconfig)
    yield fault_plane_of_module.kubeconfig
    STATE_KUBECONFIG.remove(fault_plane_of_module.kubeconfig)


@pytest.fixture(scope="module")
def kube(request: pytest.FixtureRequest, kubeconfig: Path) -> AsyncClient:
    client: AsyncClient = request.getfixturevalue("fault_tekton_kube" if wants_tekton(request) else "fault_plain_kube")
    return client


@pytest_asyncio.fixture(loop_scope="session")
async def clean_cluster(kube: AsyncClient) -> None:
    """For tests whose operator watches the whole cluster: nothing of earlier tests is left in it."""
    await clear_cluster(kube)
