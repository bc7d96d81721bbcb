"""Fault tests run on a control plane of their own: they restart its API server and etcd, and load
it hard, without disturbing the rest of the suite. `--long` selects the long variants."""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from lightkube import AsyncClient

from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.kube.client import install_crds, make_client
from kubernaut.paths import crd_paths
from tests.faults.support import clear_cluster
from tests.integration.harness import STATE_KUBECONFIG


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
    plane = ControlPlane(tmp_path_factory.mktemp("fault-plane"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="package")
def kubeconfig(fault_plane: ControlPlane) -> Iterator[Path]:
    STATE_KUBECONFIG.append(fault_plane.kubeconfig)
    yield fault_plane.kubeconfig
    STATE_KUBECONFIG.remove(fault_plane.kubeconfig)


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def kube(kubeconfig: Path) -> AsyncIterator[AsyncClient]:
    client = make_client(kubeconfig)
    await install_crds(client, crd_paths())
    yield client
    await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def clean_cluster(kube: AsyncClient) -> None:
    """For tests whose operator watches the whole cluster: nothing of earlier tests is left in it."""
    await clear_cluster(kube)
