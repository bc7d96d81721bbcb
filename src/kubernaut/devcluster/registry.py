"""A local OCI registry on loopback (`crane registry serve`, in memory) and pushing Tekton bundles
to it.

A Tekton bundle is an OCI image whose every layer is a tar holding one YAML object, annotated with
the object's apiVersion, kind (lower-case) and name; Tekton's bundles resolver reads these. Plain
HTTP is fine: go-containerregistry speaks HTTP to loopback registries without being told.
"""

import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubernaut.devcluster.controlplane import ControlPlane, free_port

_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
_CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


def start_registry(plane: ControlPlane, crane: Path, timeout: float = 30.0) -> str:
    """Serve a registry with the control plane (stopped with it); returns its `host:port`."""
    host = f"127.0.0.1:{free_port()}"
    plane.spawn("registry", [str(crane), "registry", "serve", "--address", host], None, lambda: _answers(host), timeout)
    return host


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def push_bundle(image: str, objects: Sequence[Mapping[str, Any]]) -> str:
    """Push Tekton objects (v1 Pipelines and Tasks) as a bundle to `image` (`host:port/repo:tag`,
    plain HTTP); returns the manifest digest."""
    host, _, rest = image.partition("/")
    repo, _, tag = rest.rpartition(":")
    base = f"http://{host}/v2/{repo}"
    layers = []
    for obj in objects:
        blob = _tar_one(f"{obj['metadata']['name']}.yaml", yaml.safe_dump(dict(obj)).encode())
        layers.append(
            {
                "mediaType": _LAYER_TYPE,
                "digest": _push_blob(base, blob),
                "size": len(blob),
                "annotations": {
                    "dev.tekton.image.apiVersion": str(obj["apiVersion"]).rpartition("/")[2],
                    "dev.tekton.image.kind": str(obj["kind"]).lower(),
                    "dev.tekton.image.name": str(obj["metadata"]["name"]),
                },
            }
        )
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    config_blob = config.encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MANIFEST_TYPE,
        "config": {"mediaType": _CONFIG_TYPE, "digest": _push_blob(base, config_blob), "size": len(config_blob)},
        "layers": layers,
    }
    body = json.dumps(manifest).encode()
    _send("PUT", f"{base}/manifests/{tag}", body, _MANIFEST_TYPE)
    return _digest(body)


def _tar_one(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _push_blob(base: str, blob: bytes) -> str:
    """The monolithic upload: POST opens an upload, PUT with the digest completes it."""
    digest = _digest(blob)
    location = _send("POST", f"{base}/blobs/uploads/", b"", "application/octet-stream")
    if location.startswith("/"):
        location = base.split("/v2/")[0] + location
    separator = "&" if "?" in location else "?"
    _send("PUT", f"{location}{separator}digest={digest}", blob, "application/octet-stream")
    return digest


def _send(method: str, url: str, body: bytes, content_type: str) -> str:
    """The reply's Location header (uploads), or ''."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method=method)
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(resp.headers.get("Location") or "")
