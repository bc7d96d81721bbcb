"""A real local control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and kwok playing the kubelet of one fake node, `kwok-node-0`.

Objects are stored and served, admission and RBAC are real, the built-in controllers run (garbage
collector, namespaces, Jobs, ServiceAccounts and their tokens...), pods are scheduled onto the fake
node and kwok moves them through their lifecycle as its stages say (`tools/controlplane/kwok/stages/`);
no container ever runs.
"""

import base64
import contextlib
import ctypes
import json
import logging
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import yaml

from kubernaut.devcluster.binaries import ControlPlaneBinaries, ensure_binaries, source_dir
from kubernaut.devcluster.certs import CertPaths, generate_pki, issue_client_cert
from kubernaut.errors import ControlPlaneError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_NAME = "kwok-node-0"
_POD_CIDR = "10.64.0.0/16"  # kwok's pod IPs; apart from the service range 10.0.0.0/24


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it if our process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_file: IO[bytes]
    argv: list[str]
    env: dict[str, str] | None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log_file.close()


@dataclass
class ControlPlane:
    """Start with `start()` (or as a context manager); `kubeconfig` is then ready to use."""

    state_dir: Path
    binaries: ControlPlaneBinaries | None = None
    extra_apiserver_args: list[str] = field(default_factory=list)
    # Tests that play a controller or the kubelet themselves turn it off: kube-controller-manager's
    # --controllers, and whether kube-scheduler and kwok run (no node, so pods stay unscheduled).
    controllers: str = "*"
    fake_kubelet: bool = True
    fsync: bool = False
    api_port: int = 0
    etcd_port: int = 0
    pki: CertPaths | None = None
    _procs: list[_Process] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 60.0) -> Self:
        started = time.monotonic()
        binaries = self.binaries or ensure_binaries()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pki = generate_pki(self.state_dir / "pki")
        try:
            self._start_etcd(binaries, timeout)
            self._start_apiserver(binaries, timeout)
            self._write_kubeconfig()
            self._start_controllers(binaries, timeout)
        except BaseException:
            self.stop()
            raise
        log.info("Control plane ready at %s in %.1fs", self.url, time.monotonic() - started)
        return self

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> _Process:
        log_file = (self.state_dir / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
        )
        proc = _Process(name, popen, log_file, argv, env)
        self._procs.append(proc)
        return proc

    def _start_etcd(self, binaries: ControlPlaneBinaries, timeout: float) -> None:
        self.etcd_port, peer_port = free_port(), free_port()
        data_dir = self.state_dir / "etcd"
        argv = [
            str(binaries.etcd),
            "--name=kubernaut-dev",
            f"--data-dir={data_dir}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=kubernaut-dev=http://127.0.0.1:{peer_port}",
            "--log-level=warn",
        ]
        if not self.fsync:
            argv.append("--unsafe-no-fsync")
        proc = self._spawn("etcd", argv)
        self._wait(proc, lambda: _http_ok(f"http://127.0.0.1:{self.etcd_port}/health"), timeout)

    def _start_apiserver(self, binaries: ControlPlaneBinaries, timeout: float) -> None:
        assert self.pki is not None
        self.api_port = self.api_port or free_port()  # a restart keeps the port
        pki = self.pki
        argv = [
            str(binaries.kube_apiserver),
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--cert-dir={self.state_dir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # The ServiceAccount controller gives each namespace its `default` account, but a moment
            # after the namespace exists; with this admission plugin on, a pod created in that moment
            # is refused. No kubelet mounts tokens either, so pods are admitted without it.
            "--disable-admission-plugins=ServiceAccount",
            *self.extra_apiserver_args,
        ]
        proc = self._spawn("kube-apiserver", argv)
        self._wait(proc, self._api_ready, timeout)

    def _start_controllers(self, binaries: ControlPlaneBinaries, timeout: float) -> None:
        """kube-controller-manager, kube-scheduler and kwok: spawned together, then awaited."""
        assert self.pki is not None
        kcm_port, scheduler_port = free_port(), free_port()
        # The controller manager signs in as itself and runs each controller under its own
        # ServiceAccount (as kubeadm sets it up), so the bootstrap RBAC roles apply.
        kcm_config = self._component_kubeconfig("kube-controller-manager", "system:kube-controller-manager", [])
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                *_serving_args(kcm_config, kcm_port, self.state_dir / "kube-controller-manager"),
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                f"--cluster-signing-cert-file={self.pki.ca_cert}",
                f"--cluster-signing-key-file={self.pki.ca_key}",
                f"--controllers={self.controllers}",
            ],
        )
        if not self.fake_kubelet:
            self._wait(kcm, lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", _insecure()), timeout)
            return
        scheduler_config = self._component_kubeconfig("kube-scheduler", "system:kube-scheduler", [])
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(binaries.kube_scheduler),
                *_serving_args(scheduler_config, scheduler_port, self.state_dir / "kube-scheduler"),
            ],
        )
        # kwok stands in for the kubelet; the node authorizer is not enabled, so it gets admin rights.
        kwok_config = self._component_kubeconfig("kwok", "kwok", ["system:masters"])
        stages = sorted((source_dir() / "kwok" / "stages").glob("*.yaml"))
        kwok = self._spawn(
            "kwok",
            [
                str(binaries.kwok),
                f"--kubeconfig={kwok_config}",
                *(f"--config={stage}" for stage in stages),
                "--manage-all-nodes=true",
                f"--cidr={_POD_CIDR}",
            ],
        )
        self._create_node()
        self._wait(kcm, lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", _insecure()), timeout)
        self._wait(scheduler, lambda: _http_ok(f"https://127.0.0.1:{scheduler_port}/healthz", _insecure()), timeout)
        self._wait(kwok, self._node_ready, timeout)

    def _component_kubeconfig(self, name: str, user: str, groups: list[str]) -> Path:
        assert self.pki is not None
        cert, key = self.pki.ca_cert.with_name(f"{name}.crt"), self.pki.ca_cert.with_name(f"{name}.key")
        issue_client_cert(self.pki.ca_cert, self.pki.ca_key, user, groups, cert, key)
        path = self.state_dir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(self.kubeconfig_dict(user, cert.read_bytes(), key.read_bytes())))
        path.chmod(0o600)
        return path

    def _create_node(self) -> None:
        """The fake node kwok manages (kwok's own node template, trimmed); it may exist from a last run."""
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/role": "agent",
                    "node-role.kubernetes.io/agent": "",
                    "type": "kwok",
                },
            },
            "status": {
                "allocatable": resources,
                "capacity": resources,
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
            },
        }
        request = urllib.request.Request(
            f"{self.url}/api/v1/nodes",
            data=json.dumps(node).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._ssl_context()):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise ControlPlaneError(f"creating node {NODE_NAME}: HTTP {exc.code} {exc.read()[:500]!r}") from None

    def _node_ready(self) -> bool:
        try:
            node = self.get_json(f"/api/v1/nodes/{NODE_NAME}")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        conditions = (node.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None, ready: Any, timeout: float) -> None:
        """Run one more process with the control plane (stopped with it, first); wait for `ready()`."""
        self._wait(self._spawn(name, argv, env), ready, timeout)

    def crash(self, name: str) -> _Process:
        """SIGKILL the process `name`, as a crash would (fault tests); `respawn` starts it again."""
        proc = next(p for p in self._procs if p.name == name)
        proc.popen.kill()
        proc.popen.wait()
        proc.log_file.close()
        self._procs.remove(proc)
        return proc

    def restart_controller_manager(self, timeout: float = 60.0) -> None:
        """Start kube-controller-manager again, after CRDs are installed: its garbage collector then
        watches their kinds at once instead of at its next discovery (every 30 s). Until it does, an
        object of a new kind deleted in the foreground stays, with its name, and dependents of it are
        not collected."""
        kcm = self.crash("kube-controller-manager")
        port = next(arg.split("=", 1)[1] for arg in kcm.argv if arg.startswith("--secure-port="))
        self.respawn(kcm, lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", _insecure()), timeout)

    def take_exited(self, name: str) -> _Process | None:
        """The process `name` if it has exited by itself (no longer the plane's; `respawn` starts it
        again), else None."""
        proc = next((p for p in self._procs if p.name == name), None)
        if proc is None or proc.popen.poll() is None:
            return None
        proc.log_file.close()
        self._procs.remove(proc)
        return proc

    def respawn(self, crashed: _Process, ready: Any, timeout: float) -> None:
        """Start a crashed process again as it was started; wait for `ready()`."""
        self.spawn(crashed.name, crashed.argv, crashed.env, ready, timeout)

    def log_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def send_json(self, method: str, path: str, body: Any, content_type: str = "application/json") -> Any:
        """Send `body` to the API server as the admin; the decoded reply (HTTPError on failure)."""
        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": content_type}, method=method
        )
        with urllib.request.urlopen(request, timeout=30, context=self._ssl_context()) as resp:
            return json.loads(resp.read())

    def apply(self, path: str, body: Any) -> Any:
        """Server-side apply `body` at its object path (big CRDs exceed client-side apply's annotation)."""
        return self.send_json(
            "PATCH", f"{path}?fieldManager=kubernaut-dev&force=true", body, "application/apply-patch+yaml"
        )

    def get_json(self, path: str) -> Any:
        """GET `path` from the API server as the admin."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5, context=self._ssl_context()) as resp:
            return json.loads(resp.read())

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _api_ready(self) -> bool:
        return _http_ok(f"{self.url}/readyz", self._ssl_context())

    def _wait(self, proc: _Process, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                tail = (self.state_dir / f"{proc.name}.log").read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail}")
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{proc.name} was not ready within {timeout:.0f}s; see {self.state_dir}")

    def _write_kubeconfig(self) -> None:
        assert self.pki is not None
        self.kubeconfig.write_text(
            yaml.safe_dump(
                self.kubeconfig_dict(
                    "kubernaut-admin", self.pki.admin_cert.read_bytes(), self.pki.admin_key.read_bytes()
                )
            )
        )
        self.kubeconfig.chmod(0o600)

    def kubeconfig_dict(self, user: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
        """A kubeconfig for this API server authenticating with a client certificate."""
        assert self.pki is not None
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubernaut-dev",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": _b64(self.pki.ca_cert.read_bytes()),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)},
                }
            ],
            "contexts": [{"name": "kubernaut-dev", "context": {"cluster": "kubernaut-dev", "user": user}}],
            "current-context": "kubernaut-dev",
        }

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()

    def restart_apiserver(self, down_for: float = 0.0) -> None:
        """Stop and start kube-apiserver on the same port (fault tests)."""
        binaries = self.binaries or ensure_binaries()
        api = next(p for p in self._procs if p.name == "kube-apiserver")
        api.stop()
        self._procs.remove(api)
        time.sleep(down_for)
        self._start_apiserver(binaries, 60.0)
        self._write_kubeconfig()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.stop()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _serving_args(kubeconfig: Path, port: int, cert_dir: Path) -> list[str]:
    """Flags kube-controller-manager and kube-scheduler share: one identity, /healthz on loopback."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        "--leader-elect=false",
    ]


def _insecure() -> ssl.SSLContext:
    """For /healthz of components serving a self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def write_endpoints(state_dir: Path, endpoints: dict[str, str]) -> Path:
    path = state_dir / "endpoints.json"
    path.write_text(json.dumps(endpoints, indent=2) + "\n")
    return path
