"""Control planes with real Tekton, and workflow bundles for tests: real Tekton Pipelines in the
session's local registry, whose task pods kwok plays as their name says (`devcluster.bundles`:
`succeed:1tasks-0s`, `fail:task1of1-exit3-0s`, `imagepull:0s`, ...), each pushed on first use."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubernaut.devcluster.binaries import TektonBinaries, find_tekton_binaries
from kubernaut.devcluster.bundles import build_pipeline, local_image, parse_sample
from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.devcluster.registry import push_bundle
from kubernaut.devcluster.tekton import TektonInfo, start_tekton

REGISTRY: list[str] = []
"""`host:port` of the session's bundle registry (set by the `bundle_registry` fixture)."""

_PUSHED: set[str] = set()

UNRESOLVED_BUNDLE = "kubernaut.local/samples/succeed:1tasks-1s"
"""The sample catalog's placeholder, which no registry serves: for tests where nothing runs
PipelineRuns, or where the test writes their status itself."""

TEKTON_KUBECONFIGS: set[Path] = set()
"""The kubeconfigs of the control planes that run Tekton."""


def played(name: str) -> str:
    """The image reference of the sample bundle `name` (`<outcome>:<tag>`), pushed if it is not yet."""
    image = local_image(name, registry())
    if image not in _PUSHED:
        push_bundle(image, [build_pipeline(parse_sample(name))])
        _PUSHED.add(image)
    return image


def missing(name: str) -> str:
    """A reference into the registry that holds no bundle: Tekton's resolver cannot fetch it."""
    return f"{registry()}/missing/{name}"


def default_bundle() -> str:
    """A bundle that succeeds in a second: played where the current tests' plane runs Tekton, else the
    placeholder (nothing resolves it there)."""
    from tests.integration.harness import STATE_KUBECONFIG

    if STATE_KUBECONFIG and STATE_KUBECONFIG[-1] in TEKTON_KUBECONFIGS:
        return played("succeed:1tasks-1s")
    return UNRESOLVED_BUNDLE


def registry() -> str:
    if not REGISTRY:
        raise RuntimeError("no bundle registry: the test needs a control plane with Tekton (mark it `tekton`)")
    return REGISTRY[-1]


@dataclass(frozen=True)
class TektonCluster:
    """A control plane running real Tekton (controller and resolvers) beside a bundle registry."""

    plane: ControlPlane
    tekton: TektonInfo
    registry: str  # host:port, plain HTTP


def tekton_binaries() -> TektonBinaries:
    binaries = find_tekton_binaries()
    if binaries is None:  # a cold build takes a quarter of an hour: longer than a test may take
        pytest.fail("Tekton's binaries are not built: run `.venv/bin/python -m kubernaut.devcluster.binaries --tekton`")
    return binaries


@contextlib.contextmanager
def started_tekton_cluster(directory: Path, registry: str, *extra_args: str) -> Iterator[TektonCluster]:
    """A control plane of its own with Tekton's CRDs, controller and resolvers, stopped afterwards."""
    plane = ControlPlane(directory, extra_apiserver_args=list(extra_args))
    plane.start()
    try:
        cluster = TektonCluster(plane, start_tekton(plane, tekton_binaries()), registry)
        TEKTON_KUBECONFIGS.add(plane.kubeconfig)
        yield cluster
    finally:
        TEKTON_KUBECONFIGS.discard(plane.kubeconfig)
        plane.stop()


def wants_tekton(request: pytest.FixtureRequest) -> bool:
    """Whether the requesting module is marked `tekton` (`pytestmark = pytest.mark.tekton`)."""
    return request.node.get_closest_marker("tekton") is not None
