"""Real Tekton Pipelines on the local control plane: its CRDs and ConfigMaps, the controller and the
remote resolvers (bundles come from the local registry, `devcluster.registry`).

Built from `tools/tekton/` (pinned release) into the binary cache on first use. No webhook runs:
the reconcilers default and validate in memory, so an invalid object is accepted and then fails
in reconcile; the CRDs' conversion webhook is replaced by `strategy: None` (everything is v1).
Pods land on the kwok node, where the `tekton-pod-finish` stage ends their steps.
"""

import logging
import os
import random
import socket
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubernaut.devcluster.binaries import TektonBinaries, build_tekton_binaries, tekton_module_dir, tekton_version
from kubernaut.devcluster.controlplane import ControlPlane, free_port
from kubernaut.errors import ControlPlaneError

log = logging.getLogger(__name__)

SYSTEM_NAMESPACE = "tekton-pipelines"
RESOLVERS_NAMESPACE = "tekton-pipelines-resolvers"
# Written into pod specs only (init containers, sidecar stop); no image is ever pulled here.
_IMAGE_FLAGS = ("entrypoint", "nop", "sidecarlogresults", "workingdirinit", "shell", "shell-image-win")
_RESOLUTION_REQUESTS = "resolutionrequests.resolution.tekton.dev"
_READY_LINE = b"Starting controllers..."  # knative sharedmain, once the informers have synced


@dataclass(frozen=True)
class TektonInfo:
    version: str
    controller_log: Path
    resolvers_log: Path
    start_seconds: float  # from the first manifest applied to both processes ready


def start_tekton(plane: ControlPlane, binaries: TektonBinaries | None = None, timeout: float = 120.0) -> TektonInfo:
    """Install Tekton's CRDs and ConfigMaps and start its controller and resolvers with `plane`
    (`plane.stop()` stops them). Builds the binaries first if the cache lacks them."""
    binaries = binaries or build_tekton_binaries()
    module = tekton_module_dir()
    started = time.monotonic()
    for namespace in (SYSTEM_NAMESPACE, RESOLVERS_NAMESPACE):
        _create_namespace(plane, namespace)
    crds = [doc for path in sorted((module / "config" / "300-crds").glob("*.yaml")) for doc in _documents(path)]
    for doc in crds:
        doc["spec"]["conversion"] = {"strategy": "None"}  # no conversion webhook runs
        if doc["metadata"]["name"] == _RESOLUTION_REQUESTS:
            _optional_resolution_status(doc)
        plane.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{doc['metadata']['name']}", doc)
    for path in sorted((module / "config").glob("config-*.yaml")):
        for doc in _documents(path):
            if doc["metadata"]["name"] == "feature-flags":
                # The affinity assistant is a StatefulSet; nothing runs those here.
                doc["data"]["coschedule"] = "disabled"
            _apply_configmap(plane, doc, SYSTEM_NAMESPACE)
    for path in sorted((module / "config" / "resolvers").glob("*.yaml")):
        for doc in _documents(path):
            if doc.get("kind") != "ConfigMap":
                continue  # the Deployment, RBAC and Service are for a real cluster
            if doc["metadata"]["name"] == "resolvers-feature-flags":
                doc["data"]["enable-bundles-resolver"] = "true"
            _apply_configmap(plane, doc, RESOLVERS_NAMESPACE)
    _wait_established(plane, [doc["metadata"]["name"] for doc in crds], timeout)

    kubeconfig = str(plane.kubeconfig)
    controller_argv = [
        str(binaries.controller),
        f"-kubeconfig={kubeconfig}",
        "-disable-ha",  # no leader election: no lease to wait out after a crash
        *(f"-{_image_flag(name)}=fake.local/tekton/{name}:{tekton_version()}" for name in _IMAGE_FLAGS),
    ]
    plane.spawn(
        "tekton-controller",
        controller_argv,
        _env(SYSTEM_NAMESPACE, "tekton.dev/pipeline"),
        _logged(plane.log_path("tekton-controller")),
        timeout,
    )
    plane.spawn(
        "tekton-resolvers",
        [str(binaries.resolvers), f"-kubeconfig={kubeconfig}"],
        # Its lease ConfigMap has its own name (as in Tekton's resolvers Deployment).
        {
            **_env(RESOLVERS_NAMESPACE, "tekton.dev/resolution"),
            "CONFIG_LEADERELECTION_NAME": "config-leader-election-resolvers",
        },
        _logged(plane.log_path("tekton-resolvers")),
        timeout,
    )
    seconds = time.monotonic() - started
    log.info("Tekton %s ready in %.1fs", tekton_version(), seconds)
    return TektonInfo(
        tekton_version(), plane.log_path("tekton-controller"), plane.log_path("tekton-resolvers"), seconds
    )


def _optional_resolution_status(crd: dict[str, Any]) -> None:
    """Tekton's ResolutionRequest schema requires `status.refSource` and `status.source`, but a
    failed resolution has neither: the API server refuses the resolver's status write ("error
    marking resolutionrequest as failed: ... status.refSource: Required value") and the
    PipelineRun waits at ResolvingPipelineRef until it times out. Without the requirement the
    failure reaches the PipelineRun."""
    for version in crd["spec"]["versions"]:
        version["schema"]["openAPIV3Schema"]["properties"]["status"].pop("required", None)


def _metrics_port() -> int:
    """knative parses METRICS_PROMETHEUS_PORT as a 16-bit signed int: a free port below 32768."""
    for _ in range(100):
        port = random.randint(20000, 32767)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ControlPlaneError("no free port below 32768 for Tekton's metrics")


def _image_flag(name: str) -> str:
    return name if name == "shell-image-win" else f"{name}-image"


def _env(system_namespace: str, metrics_domain: str) -> dict[str, str]:
    # Free ports: the defaults (8080, 8008, 9090, on every interface) may be taken on a shared machine.
    return {
        **os.environ,
        "SYSTEM_NAMESPACE": system_namespace,
        "METRICS_DOMAIN": metrics_domain,
        "PROBES_PORT": str(free_port()),
        "PROFILING_PORT": str(free_port()),
        "METRICS_PROMETHEUS_PORT": str(_metrics_port()),
        "METRICS_PROMETHEUS_HOST": "127.0.0.1",
    }


def crash_controller(plane: ControlPlane, timeout: float = 120.0) -> Callable[[], None]:
    """SIGKILL Tekton's controller, as a crash would (fault tests). The function returned starts it
    again as it was started and waits until it reconciles."""
    crashed = plane.crash("tekton-controller")

    def restart() -> None:
        plane.respawn(crashed, _logged(plane.log_path("tekton-controller")), timeout)

    return restart


def restart_exited(plane: ControlPlane, timeout: float = 120.0) -> list[str]:
    """Start Tekton's processes that have exited again, as they were started, as a cluster restarts
    a Deployment's pods: both exit when they lose the API server (the resolvers' lease is lost, the
    controller's informers stop). The names started again."""
    restarted = []
    for name in ("tekton-controller", "tekton-resolvers"):
        exited = plane.take_exited(name)
        if exited is not None:
            log.warning("%s exited; starting it again", name)
            plane.respawn(exited, _logged(plane.log_path(name)), timeout)
            restarted.append(name)
    return restarted


def _logged(path: Path) -> Any:
    """Ready once the process has logged that its controllers start (after this point in the log)."""
    offset = path.stat().st_size if path.exists() else 0

    def ready() -> bool:
        with path.open("rb") as f:
            f.seek(offset)
            return _READY_LINE in f.read()

    return ready


def _documents(path: Path) -> list[dict[str, Any]]:
    # libyaml's loader when there is one: the pure-Python one takes seconds on Tekton's CRDs.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]


def _create_namespace(plane: ControlPlane, name: str) -> None:
    try:
        plane.send_json(
            "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise ControlPlaneError(f"creating namespace {name}: HTTP {exc.code} {exc.read()[:500]!r}") from None


def _apply_configmap(plane: ControlPlane, doc: dict[str, Any], namespace: str) -> None:
    doc["metadata"]["namespace"] = namespace
    plane.apply(f"/api/v1/namespaces/{namespace}/configmaps/{doc['metadata']['name']}", doc)


def _wait_established(plane: ControlPlane, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = names
    while time.monotonic() < deadline:
        pending = [name for name in names if not _established(plane, name)]
        if not pending:
            return
        time.sleep(0.2)
    raise ControlPlaneError(f"Tekton CRDs not Established within {timeout:.0f}s: {pending}")


def _established(plane: ControlPlane, name: str) -> bool:
    crd = plane.get_json(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
