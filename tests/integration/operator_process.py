"""The production setup under test: a control plane of its own with the shipped RBAC applied,
kubeconfigs for ServiceAccounts (TokenRequest) and for people (client certificates), and
`kubernaut run` as a real subprocess, observed through its /metrics and /readyz."""

import asyncio
import contextlib
import ctypes
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from lightkube import AsyncClient, codecs
from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Namespace, ServiceAccount

from kubernaut.devcluster.certs import issue_client_cert
from kubernaut.devcluster.controlplane import ControlPlane, free_port
from kubernaut.kube.client import make_client
from kubernaut.kube.resources import PipelineRunResource
from kubernaut.paths import crd_paths, project_dir
from tests.integration.harness import MANAGED, TEST_THROUGHPUT, install_kinds
from tests.integration.tekton_support import started_tekton_cluster

SYSTEM_NAMESPACE = "kubernaut-system"
EXECUTION_NAMESPACE = "kubernaut-workflows"
RBAC_KINDS = (
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "Role",
    "ClusterRoleBinding",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)


def render_manifests() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render config/default"
    out = subprocess.run(
        [kubectl, "kustomize", str(project_dir() / "config" / "default")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


async def apply_shipped_rbac(client: AsyncClient) -> list[dict[str, Any]]:
    """Namespaces, ServiceAccounts, roles and bindings exactly as `config/default` renders them."""
    docs = [doc for doc in render_manifests() if doc["kind"] in RBAC_KINDS]
    for kind in RBAC_KINDS:  # namespaces first, bindings last
        for doc in docs:
            if doc["kind"] == kind:
                await client.apply(codecs.from_dict(doc), force=True)
    return docs


# -- identities ---------------------------------------------------------------------------------------


def _write_kubeconfig(plane: ControlPlane, user: str, credentials: dict[str, str], path: Path) -> Path:
    config = plane.kubeconfig_dict(user, b"", b"")
    config["users"] = [{"name": user, "user": credentials}]
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


async def service_account_kubeconfig(
    admin: AsyncClient, plane: ControlPlane, name: str, directory: Path, namespace: str = SYSTEM_NAMESPACE
) -> Path:
    """A kubeconfig carrying a bound token of the ServiceAccount, issued by the TokenRequest API."""
    request = ServiceAccount.Token(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
    )
    issued = await admin.create(request, name=name, namespace=namespace)
    token = issued.status.token
    return _write_kubeconfig(plane, f"{namespace}-{name}", {"token": token}, directory / f"{name}.kubeconfig")


def user_kubeconfig(plane: ControlPlane, user: str, directory: Path, groups: tuple[str, ...] = ()) -> Path:
    """A kubeconfig of a person, authenticated by a client certificate of the cluster CA."""
    assert plane.pki is not None
    cert, key = directory / f"{user}.crt", directory / f"{user}.key"
    issue_client_cert(plane.pki.ca_cert, plane.pki.ca_key, user, list(groups), cert, key)
    return _client_cert_kubeconfig(plane, user, cert, key, directory / f"{user}.kubeconfig")


def _client_cert_kubeconfig(plane: ControlPlane, user: str, cert: Path, key: Path, path: Path) -> Path:
    path.write_text(yaml.safe_dump(plane.kubeconfig_dict(user, cert.read_bytes(), key.read_bytes())))
    path.chmod(0o600)
    return path


# -- a control plane of its own ---------------------------------------------------------------------------


@dataclass
class ProductionCluster:
    """A real API server (RBAC on) with the CRDs, the shipped RBAC and an admin client."""

    plane: ControlPlane
    admin: AsyncClient
    directory: Path

    async def kubeconfig_for(self, component: str) -> Path:
        return await service_account_kubeconfig(self.admin, self.plane, f"kubernaut-{component}", self.directory)

    async def lease(self, name: str) -> dict[str, Any] | None:
        try:
            return dict((await self.admin.get(Lease, name, namespace=SYSTEM_NAMESPACE)).to_dict())
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise

    async def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{int(time.time() * 1000) % 10**9}"
        await self.admin.create(Namespace(metadata=ObjectMeta(name=name, labels=MANAGED)))
        return name


@contextlib.contextmanager
def started_plane(directory: Path, *extra_args: str) -> Iterator[ControlPlane]:
    plane = ControlPlane(directory, extra_apiserver_args=list(extra_args))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@contextlib.asynccontextmanager
async def production_cluster(
    directory: Path, *extra_args: str, registry: str | None = None
) -> AsyncIterator[ProductionCluster]:
    """A control plane of its own with the shipped RBAC; with real Tekton pulling from `registry` if
    one is given, else with Tekton's kinds but no controller running them."""
    async with contextlib.AsyncExitStack() as stack:
        if registry is None:
            plane = stack.enter_context(started_plane(directory / "plane", *extra_args))
        else:
            plane = stack.enter_context(started_tekton_cluster(directory / "plane", registry, *extra_args)).plane
        admin = make_client(plane.kubeconfig)
        stack.push_async_callback(admin.close)
        await install_kinds(admin, plane, crd_paths(tekton_crds=registry is None))
        await apply_shipped_rbac(admin)
        yield ProductionCluster(plane=plane, admin=admin, directory=directory)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory, bundle_registry: str) -> AsyncIterator[ProductionCluster]:
    """One control plane with real Tekton per test module, so that no other test's objects are watched
    or reconciled."""
    async with production_cluster(tmp_path_factory.mktemp("production"), registry=bundle_registry) as found:
        yield found


async def holder(cluster: ProductionCluster, lease: str) -> str:
    """The holderIdentity of a Lease in kubernaut-system; empty when free or absent."""
    found = await cluster.lease(lease)
    return str(((found or {}).get("spec") or {}).get("holderIdentity") or "")


async def count_pipelinerun_creations(client: AsyncClient, seen: Counter[str], stop: asyncio.Event) -> None:
    """Every ADDED event of a PipelineRun in the execution namespace, by name."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            async for op, obj in client.watch(PipelineRunResource, namespace=EXECUTION_NAMESPACE):
                if op == "ADDED":
                    seen[obj.metadata.name] += 1
                if stop.is_set():
                    return


# -- `kubernaut run` as a subprocess ----------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    audit_db: Path,
    cooldown: str = "10m",
    lease: tuple[str, str, str] = ("3s", "2s", "500ms"),
    grace: str = "10s",
    audit_close: str = "2s",
    extra: dict[str, Any] | None = None,
) -> Path:
    duration, renew, retry = lease
    path.write_text(
        yaml.safe_dump(
            {
                **TEST_THROUGHPUT,
                **(extra or {}),
                "execution": {"namespace": EXECUTION_NAMESPACE, "cooldown": cooldown},
                "routing": {"recentlyRemediatedCooldown": "1s"},
                "audit": {"url": f"sqlite:///{audit_db}", "closeTimeout": audit_close, "flushInterval": "50ms"},
                "manager": {
                    "shutdownGracePeriod": grace,
                    "leaderElection": {"leaseDuration": duration, "renewDeadline": renew, "retryPeriod": retry},
                },
            }
        )
    )
    return path


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class OperatorProcess:
    """One `kubernaut run`; its identity (POD_NAME) prefixes its Lease holder identity."""

    name: str
    kubeconfig: Path
    config: Path
    controllers: str
    log_path: Path
    extra_args: tuple[str, ...] = ()
    metrics_port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> "OperatorProcess":
        argv = [
            sys.executable,
            "-m",
            "kubernaut",
            "run",
            f"--kubeconfig={self.kubeconfig}",
            f"--config={self.config}",
            f"--controllers={self.controllers}",
            "--leader-elect",
            f"--metrics-address=127.0.0.1:{self.metrics_port}",
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        env = {"POD_NAME": self.name, "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent
        )
        log.close()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            if await asyncio.to_thread(_http_status, f"{self.url}/readyz") == 200:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.log()[-3000:]}")

    async def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as `name{labels}` -> value (empty when the process is gone)."""
        text = await asyncio.to_thread(_http_text, f"{self.url}/metrics")
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    samples[key] = float(value)
        return samples

    async def metric_sum(self, prefix: str) -> float:
        return sum(v for k, v in (await self.metrics()).items() if k.split("{")[0] == prefix)

    def signal(self, signum: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)
        return self.popen.returncode

    def stop_now(self) -> None:
        """Test teardown: whatever state it is in, it is gone afterwards."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def _http_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return ""
