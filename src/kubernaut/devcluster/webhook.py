"""The admission webhook for `kubernaut dev up` and the tests: the production server on a loopback
port with a generated CA, and the shipped webhook configurations registered against its URL."""

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lightkube import AsyncClient, codecs

from kubernaut.devcluster.certs import generate_pki, issue_serving_cert
from kubernaut.paths import project_dir
from kubernaut.webhook.server import VALIDATE_PATH, AdmissionServer


def webhook_manifests_path() -> Path:
    return project_dir() / "config" / "webhook" / "manifests.yaml"


def build_url_webhook_configurations(
    manifests: list[dict[str, Any]],
    base_url: str,
    ca_pem: bytes,
    *,
    name_suffix: str = "",
    namespace_selector: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The shipped webhook configurations with `service` replaced by `url` and the given CA bundle."""
    result = []
    for manifest in manifests:
        if manifest.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        config = json.loads(json.dumps(manifest))
        config["metadata"] = {"name": config["metadata"]["name"] + name_suffix}
        for hook in config.get("webhooks", []):
            service = hook["clientConfig"].get("service") or {}
            hook["clientConfig"] = {
                "url": base_url + service.get("path", VALIDATE_PATH),
                "caBundle": base64.b64encode(ca_pem).decode(),
            }
            if namespace_selector is not None:
                hook["namespaceSelector"] = namespace_selector
        result.append(config)
    return result


@dataclass
class DevWebhook:
    server: AdmissionServer
    url: str
    ca_pem: bytes
    configurations: list[dict[str, Any]]

    async def stop(self, client: AsyncClient | None = None) -> None:
        """Stop serving; with a client, also remove the configurations (else the API server keeps calling)."""
        if client is not None:
            for config in self.configurations:
                resource = type(codecs.from_dict(config))
                with contextlib.suppress(Exception):
                    await client.delete(resource, config["metadata"]["name"])
        await self.server.stop()


def create_serving_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, bytes]:
    """A fresh CA and a serving certificate for `host`; returns (cert, key, CA PEM)."""
    pki = generate_pki(directory / "ca")
    cert, key = directory / "tls.crt", directory / "tls.key"
    issue_serving_cert(pki.ca_cert, pki.ca_key, [host, "localhost"], cert, key)
    return cert, key, pki.ca_cert.read_bytes()


async def start_dev_webhook(
    client: AsyncClient,
    state_dir: Path,
    *,
    name_suffix: str = "",
    namespace_selector: dict[str, Any] | None = None,
) -> DevWebhook:
    """Serve the webhook on a free loopback port with a generated CA and register the shipped
    configurations against it (for `kubernaut dev up` and the tests)."""
    cert, key, ca_pem = await asyncio.to_thread(create_serving_certificate, state_dir / "webhook")
    server = AdmissionServer("127.0.0.1", 0, cert, key)
    url = await server.start()
    manifests = [dict(doc) for doc in _load_yaml_documents(webhook_manifests_path())]
    configurations = build_url_webhook_configurations(
        manifests, url, ca_pem, name_suffix=name_suffix, namespace_selector=namespace_selector
    )
    try:
        for config in configurations:
            await client.apply(codecs.from_dict(config), force=True)
    except BaseException:
        await server.stop()
        raise
    return DevWebhook(server=server, url=url, ca_pem=ca_pem, configurations=configurations)


def _load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]
