"""`kubernaut dev up`: the control plane, CRDs, sample catalog, Tekton stand-in and controllers."""

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from kubernaut.config import Settings
from kubernaut.devcluster.controlplane import ControlPlane, write_endpoints
from kubernaut.kube.client import apply_objects, install_crds, load_manifests, make_client
from kubernaut.paths import crd_paths, samples_dir

log = logging.getLogger(__name__)


async def ensure_namespace(client: object, name: str) -> None:
    try:
        await client.create(Namespace(metadata=ObjectMeta(name=name)))  # type: ignore[attr-defined]
    except ApiError as exc:
        if exc.status.code != 409:
            raise


async def run_dev_up(
    settings: Settings,
    *,
    state_dir: Path,
    controllers: tuple[str, ...],
    tekton_standin: bool,
    announce: Callable[[str], None],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    announce("Starting the local control plane (etcd + kube-apiserver)...")
    plane = await asyncio.to_thread(ControlPlane(state_dir, fsync=True).start)
    try:
        client = make_client(plane.kubeconfig)
        await install_crds(client, crd_paths())
        await ensure_namespace(client, settings.execution.namespace)
        await apply_objects(client, load_manifests([samples_dir()]))
        endpoints = {"apiserver": plane.url}
        write_endpoints(state_dir, endpoints)
        announce(
            f"[green]Ready.[/green] API server {plane.url}\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  kubectl get remediationworkflows,remediationrequests,workflowexecutions -A\n"
            f"Endpoints: {state_dir / 'endpoints.json'}. Press Ctrl-C to stop."
        )
        if not tekton_standin:
            announce("Tekton stand-in disabled (--no-tekton-standin): PipelineRuns will not progress.")
        if not controllers:
            announce("Controllers disabled (--no-controllers).")
        await stop.wait()
    finally:
        announce("Stopping...")
        await asyncio.to_thread(plane.stop)
