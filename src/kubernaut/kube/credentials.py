"""Credentials from a kubeconfig user's `exec` plugin, as EKS, GKE and AKS kubeconfigs have them.

lightkube runs plugins of the beta API versions only and reads only a token from them; this runs
plugins of `client.authentication.k8s.io/v1` and `v1beta1` as client-go does (never interactively,
with KUBERNETES_EXEC_INFO), takes a client certificate or a bearer token from them, and runs the
plugin again when the token expires or the API server answers 401. A client certificate is read
once, at start (the TLS connection is set up with it).
"""

import asyncio
import base64
import json
import os
import subprocess
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
from lightkube import KubeConfig
from lightkube.config.models import User
from lightkube.core.exceptions import ConfigError

API_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
)
REFRESH_MARGIN = timedelta(seconds=30)  # a token this close to its expiry is fetched again
PLUGIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class ExecCredential:
    token: str | None = None
    client_certificate: str | None = None  # PEM
    client_key: str | None = None  # PEM
    expires: datetime | None = None

    def fresh(self, now: datetime) -> bool:
        return self.expires is None or now < self.expires - REFRESH_MARGIN


def parse_exec_credential(output: bytes, api_version: str, command: str = "the exec plugin") -> ExecCredential:
    """The `status` of the ExecCredential a plugin printed; a ConfigError says what is wrong with it."""
    try:
        document = json.loads(output)
        status = document["status"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{command} printed no ExecCredential with a status") from None
    if document.get("apiVersion") not in (None, api_version):
        raise ConfigError(f"{command} printed an ExecCredential of {document.get('apiVersion')}, not {api_version}")
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if bool(cert) != bool(key):
        raise ConfigError(f"{command} printed a client certificate without its key, or a key without its certificate")
    token = status.get("token") or None
    if not token and not cert:
        raise ConfigError(f"{command} printed neither a token nor a client certificate")
    expires = None
    if status.get("expirationTimestamp"):
        try:
            expires = datetime.fromisoformat(str(status["expirationTimestamp"]).replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{command} printed a bad expirationTimestamp") from None
    return ExecCredential(token=token, client_certificate=cert or None, client_key=key or None, expires=expires)


@dataclass(frozen=True)
class ExecPlugin:
    api_version: str
    argv: tuple[str, ...]
    env: dict[str, str]

    @classmethod
    def from_user(cls, user_exec: Any, abs_file: Callable[[str], Any]) -> "ExecPlugin":
        if user_exec.apiVersion not in API_VERSIONS:
            raise ConfigError(f"exec plugin API version {user_exec.apiVersion} is not supported")
        command = str(user_exec.command)
        if os.sep in command:  # a path relative to the kubeconfig, as client-go reads it
            command = str(abs_file(command))
        info = {"apiVersion": user_exec.apiVersion, "kind": "ExecCredential", "spec": {"interactive": False}}
        env = {
            **os.environ,
            **{var.name: var.value for var in user_exec.env or []},
            "KUBERNETES_EXEC_INFO": json.dumps(info),
        }
        return cls(user_exec.apiVersion, (command, *(user_exec.args or [])), env)

    def run(self) -> ExecCredential:
        try:
            done = subprocess.run(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=PLUGIN_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"exec plugin {self.argv[0]}: {exc}") from None
        return self._parse(done.returncode, done.stdout, done.stderr)

    async def run_async(self) -> ExecCredential:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            async with asyncio.timeout(PLUGIN_TIMEOUT):
                stdout, stderr = await proc.communicate()
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"exec plugin {self.argv[0]}: {exc}") from None
        return self._parse(proc.returncode or 0, stdout, stderr)

    def _parse(self, code: int, stdout: bytes, stderr: bytes) -> ExecCredential:
        if code != 0:
            raise ConfigError(
                f"exec plugin {self.argv[0]} exited with {code}: {stderr.decode(errors='replace')[-500:]}"
            )
        return parse_exec_credential(stdout, self.api_version, f"exec plugin {self.argv[0]}")


class ExecTokenAuth(httpx.Auth):
    """A bearer token from an exec plugin, fetched again near its expiry or after a 401."""

    def __init__(self, plugin: ExecPlugin, first: ExecCredential) -> None:
        self._plugin = plugin
        self._credential = first
        self._lock = asyncio.Lock()

    async def _token(self, rejected: str | None = None) -> str:
        async with self._lock:
            current = self._credential
            if current.token == rejected or not current.fresh(datetime.now(UTC)):
                self._credential = await self._plugin.run_async()
            return str(self._credential.token)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {await self._token(rejected=token)}"
            yield request


def resolve_exec(config: KubeConfig) -> tuple[KubeConfig, ExecTokenAuth | None]:
    """For a user with an exec plugin: the config with the plugin's client certificate in its place (if
    it gives one), and the auth that adds its token (if it gives one). Other configs are returned as they are."""
    single = config.get()
    if single is None or single.user is None or single.user.exec is None:
        return config, None
    plugin = ExecPlugin.from_user(single.user.exec, single.abs_file)
    credential = plugin.run()  # once at start: a plugin that cannot log in stops us here
    user = User()
    if credential.client_certificate and credential.client_key:
        user = User(client_cert_data=_b64(credential.client_certificate), client_key_data=_b64(credential.client_key))
    resolved = KubeConfig.from_one(
        cluster=single.cluster, user=user, namespace=single.context.namespace, fname=single.fname
    )
    return resolved, ExecTokenAuth(plugin, credential) if credential.token else None


def _b64(pem: str) -> str:
    return base64.b64encode(pem.encode()).decode()
