"""Connection facts from a kubeconfig file, for clients that need them spelled out (kopf)."""

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubernaut.errors import ConfigError


@dataclass(frozen=True)
class Connection:
    server: str
    ca_data: bytes | None = None
    certificate_data: bytes | None = None
    private_key_data: bytes | None = None
    token: str | None = None
    insecure: bool = False
    namespace: str = "default"


def _data(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        path = Path(entry[key])
        return (path if path.is_absolute() else base / path).read_bytes()
    return None


def read_connection(path: Path) -> Connection:
    """The current context of a kubeconfig as a Connection; a ConfigError says what is missing."""
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    try:
        ctx_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config.get("users", []) if u["name"] == context["user"])
    except (KeyError, StopIteration, TypeError) as exc:
        raise ConfigError(f"kubeconfig {path} has no usable current context ({exc})") from None
    base = path.parent
    return Connection(
        server=cluster["server"],
        ca_data=_data(cluster, "certificate-authority", base),
        certificate_data=_data(user, "client-certificate", base),
        private_key_data=_data(user, "client-key", base),
        token=user.get("token"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        namespace=context.get("namespace", "default"),
    )
