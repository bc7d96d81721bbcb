"""`kubernaut run --kubeconfig K` where K's user logs in through an `exec` plugin
(client.authentication.k8s.io/v1), as kubeconfigs of EKS, GKE and AKS do: with a bearer token the
plugin prints, or with a client certificate it prints."""

import json
from pathlib import Path

import pytest
import yaml
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount

from kubernaut.kube.resources import RemediationRequestResource
from tests.integration.harness import eventually
from tests.integration.operator_process import (
    SYSTEM_NAMESPACE,
    OperatorProcess,
    ProductionCluster,
    cluster,
    write_config,
)
from tests.integration.rr import rr_manifest, rr_status

__all__ = ["cluster"]  # the fixture, imported for pytest

API_VERSION = "client.authentication.k8s.io/v1"


async def orchestrator_token(cluster: ProductionCluster) -> str:
    name = "kubernaut-orchestrator"
    request = ServiceAccount.Token(
        metadata=ObjectMeta(name=name, namespace=SYSTEM_NAMESPACE),
        spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
    )
    issued = await cluster.admin.create(request, name=name, namespace=SYSTEM_NAMESPACE)
    return str(issued.status.token)


def exec_kubeconfig(cluster: ProductionCluster, status: dict[str, str], directory: Path) -> Path:
    """A kubeconfig whose user runs a plugin printing an ExecCredential with `status`; the plugin
    also notes the KUBERNETES_EXEC_INFO it was given."""
    credential = directory / "credential.json"
    credential.write_text(json.dumps({"apiVersion": API_VERSION, "kind": "ExecCredential", "status": status}))
    plugin = directory / "credential-plugin"
    plugin.write_text(f'#!/bin/sh\nprintf "%s\\n" "$KUBERNETES_EXEC_INFO" >> {directory}/exec-info\ncat {credential}\n')
    plugin.chmod(0o700)
    config = cluster.plane.kubeconfig_dict("plugin-user", b"", b"")
    config["users"] = [
        {
            "name": "plugin-user",
            "user": {"exec": {"apiVersion": API_VERSION, "command": str(plugin), "interactiveMode": "Never"}},
        }
    ]
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("credential", ["token", "certificate"])
async def test_run_logs_in_through_an_exec_plugin(cluster: ProductionCluster, tmp_path: Path, credential: str) -> None:
    if credential == "token":  # the orchestrator's ServiceAccount, with the shipped RBAC
        status = {"token": await orchestrator_token(cluster)}
    else:
        pki = cluster.plane.pki
        assert pki is not None
        status = {"clientCertificateData": pki.admin_cert.read_text(), "clientKeyData": pki.admin_key.read_text()}
    kubeconfig = exec_kubeconfig(cluster, status, tmp_path)
    namespace = await cluster.namespace(f"exec-{credential}")
    config = write_config(tmp_path / "config.yaml", audit_db=tmp_path / "audit.db")
    proc = OperatorProcess(f"exec-{credential}", kubeconfig, config, "orchestrator", tmp_path / "operator.log")
    try:
        await proc.start().wait_ready()
        target = {"kind": "Deployment", "name": "api", "namespace": namespace}
        await cluster.admin.create(RemediationRequestResource(rr_manifest("rr-exec", namespace, target=target)))

        async def phase() -> str | None:
            return (await rr_status(cluster.admin, "rr-exec", namespace)).get("overallPhase")

        assert await eventually(phase, timeout=60, what="the request to get a phase")
        info = [json.loads(line) for line in (tmp_path / "exec-info").read_text().splitlines()]
        assert info
        assert all(i["apiVersion"] == API_VERSION and i["spec"]["interactive"] is False for i in info)
        assert "Traceback" not in proc.log()
    finally:
        proc.stop_now()
