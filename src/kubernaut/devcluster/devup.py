"""`kubernaut dev up`: the control plane, Tekton Pipelines, CRDs, sample catalog and controllers."""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, codecs
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, ServiceAccount

from kubernaut.audit.factory import check_audit_store, open_audit_sink
from kubernaut.config import Settings
from kubernaut.controllers.manager import build_manager
from kubernaut.devcluster.binaries import build_tekton_binaries
from kubernaut.devcluster.bundles import localize_catalog
from kubernaut.devcluster.controlplane import COMPONENTS, NODE_NAME, ControlPlane, write_endpoints
from kubernaut.devcluster.demo import NAMESPACE as DEMO_NAMESPACE
from kubernaut.devcluster.demo import NODES as DEMO_NODES
from kubernaut.devcluster.demo import run_story
from kubernaut.devcluster.registry import push_bundle, start_registry
from kubernaut.devcluster.tekton import start_tekton
from kubernaut.devcluster.webhook import start_dev_webhook
from kubernaut.domain.gates import MANAGED_LABEL, MANAGED_VALUE
from kubernaut.gateway.server import GatewayServer
from kubernaut.gateway.token import write_token_file
from kubernaut.kube.client import apply_objects, install_crds, load_manifests, make_client, patch_object
from kubernaut.kube.resources import NamespaceResource, NodeResource
from kubernaut.metrics import start_metrics_server
from kubernaut.paths import crd_paths, samples_dir
from kubernaut.web.server import UiConfig, serving

log = logging.getLogger(__name__)


async def ensure_namespace(client: AsyncClient, name: str, *, managed: bool = False) -> None:
    """The namespace exists; `managed`: it carries the opt-in label (kubernaut remediates there)."""
    labels = {MANAGED_LABEL: MANAGED_VALUE} if managed else None
    try:
        await client.create(Namespace(metadata=ObjectMeta(name=name, labels=labels)))
    except ApiError as exc:
        if exc.status.code != 409:
            raise
        if labels:
            await patch_object(client, NamespaceResource, name, None, {"metadata": {"labels": labels}})


async def ensure_demo_nodes(client: AsyncClient) -> None:
    """The demo's Node targets, opted in (a cluster-scoped target carries the label itself)."""
    for name in DEMO_NODES:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {MANAGED_LABEL: MANAGED_VALUE}},
        }
        try:
            await client.create(NodeResource(body))
        except ApiError as exc:
            if exc.status.code != 409:
                raise


def dev_settings(settings: Settings, state_dir: Path) -> Settings:
    """The local default keeps its SQLite audit store under the state dir unless the config names one."""
    if "url" in settings.audit.model_fields_set:
        return settings
    audit = settings.audit.model_copy(update={"url": f"sqlite:///{state_dir / 'audit.db'}"})
    return settings.model_copy(update={"audit": audit})


async def run_dev_up(
    settings: Settings,
    *,
    state_dir: Path,
    controllers: tuple[str, ...],
    tekton: bool,
    announce: Callable[[str], None],
    stop: asyncio.Event | None = None,
    demo: bool = False,
    log_file: Path | None = None,
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = dev_settings(settings, state_dir)
    if controllers:
        await check_audit_store(settings.audit)  # a bad audit.url stops dev up before anything starts

    announce(f"Starting the local control plane ({', '.join(COMPONENTS)}; fake node {NODE_NAME})...")
    plane = await asyncio.to_thread(ControlPlane(state_dir, fsync=True).start)
    client = make_client(plane.kubeconfig)
    tasks: list[asyncio.Task[Any]] = []
    try:
        catalog = [obj.to_dict() for obj in load_manifests([samples_dir()])]
        if tekton:
            announce("Starting Tekton Pipelines and a workflow bundle registry...")
            catalog = await asyncio.to_thread(_start_tekton, plane, catalog)
        await install_crds(client, crd_paths(tekton_crds=not tekton))
        # The garbage collector watches the new kinds from now on (PipelineRuns are released in the
        # foreground), not from its next discovery.
        await asyncio.to_thread(plane.restart_controller_manager)
        await ensure_namespace(client, settings.execution.namespace)
        await _ensure_service_account(client, settings.execution.service_account, settings.execution.namespace)
        await apply_objects(client, [codecs.from_dict(obj) for obj in catalog])
        endpoints = {"apiserver": plane.url, "kubeconfig": str(plane.kubeconfig)}
        async with contextlib.AsyncExitStack() as stack:
            # The admission webhook stamps who clears an execution block and validates our kinds.
            webhook = await start_dev_webhook(client, state_dir)
            stack.push_async_callback(webhook.stop, client)
            endpoints["webhook"] = webhook.url
            ready = asyncio.Event()
            if controllers:
                audit = await stack.enter_async_context(open_audit_sink(settings.audit, state_dir))
                manager = build_manager(settings, kubeconfig=plane.kubeconfig, controllers=controllers, audit=audit)
                stack.push_async_callback(manager.client.close)
                tasks.append(asyncio.create_task(manager.run(stop, ready), name="controllers"))
                runner, metrics_url = await start_metrics_server("127.0.0.1", 0, ready.is_set)
                stack.push_async_callback(runner.cleanup)
                endpoints["metrics"] = f"{metrics_url}/metrics"
                endpoints["audit"] = settings.audit.url
            gateway = await _start_gateway(client, settings, state_dir, stack)
            endpoints.update(gateway)
            ui = UiConfig(plane.kubeconfig, settings.execution.namespace, endpoints.get("audit"))
            endpoints["ui"] = await stack.enter_async_context(serving(ui, "127.0.0.1", 0)) + "/"
            write_endpoints(state_dir, endpoints)
            if controllers:
                await _wait_ready(ready, tasks)
            announce(_ready_text(plane, state_dir, endpoints, controllers, tekton, log_file))
            services = list(tasks)  # the system runs until a signal, or until one of its parts ends
            if demo:
                await ensure_namespace(client, DEMO_NAMESPACE, managed=True)
                await ensure_demo_nodes(client)
                tasks.append(asyncio.create_task(run_story(client, stop, announce), name="demo"))
            await asyncio.wait([asyncio.ensure_future(stop.wait()), *services], return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            announce("Stopping...")
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        await asyncio.to_thread(plane.stop)


def _start_tekton(plane: ControlPlane, catalog: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tekton's controller and resolvers, and a registry holding the catalog's bundles; the catalog
    pointed at them (built from their names, `devcluster.bundles`)."""
    binaries = build_tekton_binaries()
    start_tekton(plane, binaries)
    registry = start_registry(plane, binaries.crane)
    return localize_catalog(catalog, registry, push_bundle)


async def _ensure_service_account(client: AsyncClient, name: str, namespace: str) -> None:
    """The ServiceAccount workflow tasks run as (Tekton cannot create their pods without it)."""
    try:
        await client.create(ServiceAccount(metadata=ObjectMeta(name=name, namespace=namespace)))
    except ApiError as exc:
        if exc.status.code != 409:
            raise


async def _wait_ready(ready: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=60)
    waiter.cancel()
    for task in tasks:
        if task.done() and task.exception():
            raise task.exception()  # type: ignore[misc]


async def _start_gateway(
    client: AsyncClient, settings: Settings, state_dir: Path, stack: contextlib.AsyncExitStack
) -> dict[str, str]:
    """The Alertmanager intake, with a generated bearer token for local use."""
    token_file = state_dir / "gateway-token"
    token = write_token_file(token_file)
    config = settings.gateway.model_copy(
        update={"bearer_token_file": str(token_file), "bearer_token_secret": "", "listen": "127.0.0.1:0"}
    )
    await ensure_namespace(client, config.namespace)
    server = GatewayServer(client, config)
    url = await server.start()
    stack.push_async_callback(server.stop)
    return {"gateway": url, "gatewayToken": token}


def _ready_text(
    plane: ControlPlane,
    state_dir: Path,
    endpoints: dict[str, str],
    controllers: tuple[str, ...],
    tekton: bool,
    log_file: Path | None,
) -> str:
    lines = [
        f"[green]Ready.[/green] API server {plane.url}",
        f"  export KUBECONFIG={plane.kubeconfig}",
        "  kubectl get remediationworkflows",
        "  kubectl apply -f config/samples/requests/crashloop-api.yaml   # then: kubernaut get remediations",
        f"Endpoints: {state_dir / 'endpoints.json'}",
    ]
    if "metrics" in endpoints:
        lines.append(f"Metrics: {endpoints['metrics']}")
    if "gateway" in endpoints:
        lines.append(f"Alertmanager webhook: {endpoints['gateway']}/api/v1/signals/alertmanager")
    if "ui" in endpoints:
        lines.append(f"Web view: {endpoints['ui']}")
    lines.append(
        f"Controllers: {', '.join(controllers) or 'none (--no-controllers)'}; Tekton Pipelines: "
        f"{'on' if tekton else 'off (--no-tekton): PipelineRuns will not progress'}"
    )
    lines.append(f"Operator log: {log_file} (-v: on stderr)" if log_file else "Operator log: stderr")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)
