"""What every benchmark shares: the control plane with an audit log, identities, the machine, statistics.

The API server writes one audit line per request, so the requests of each identity (the
controllers, the bench playing Tekton, the bench itself) can be counted by verb and resource. Each
identity is a client certificate in group system:masters, exempt from API priority and fairness
like a cluster's own controllers.
"""

import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType
from prometheus_client.parser import text_string_to_metric_families

from kubernaut.devcluster.certs import issue_client_cert
from kubernaut.devcluster.controlplane import ControlPlane, free_port
from kubernaut.domain.gates import MANAGED_LABEL
from kubernaut.kube.client import install_crds, make_client
from kubernaut.kube.resources import PipelineRunResource
from kubernaut.paths import crd_paths

REPO = Path(__file__).resolve().parent.parent
CONTROLLERS_USER = "kubernaut-controllers"
TEKTON_USER = "bench-tekton"
BENCH_USER = "kubernaut-bench"
BUNDLE = "registry.example/workflows/restart-deployment:1.0.0"  # nothing resolves it: the bench plays Tekton

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [{"level": "Metadata"}],
}


# -- statistics ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))
    return ordered[index]


@dataclass
class Figure:
    """One measured quantity over several runs: the median with min and max."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    note: str = ""

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": round(self.median, 4),
            "min": round(min(self.values), 4) if self.values else None,
            "max": round(max(self.values), 4) if self.values else None,
            "runs": [round(v, 4) for v in self.values],
            "note": self.note,
        }


class Figures:
    def __init__(self) -> None:
        self._figures: dict[str, Figure] = {}

    def add(self, name: str, unit: str, value: float, note: str = "") -> None:
        figure = self._figures.setdefault(name, Figure(name, unit, note=note))
        figure.add(value)

    def get(self, name: str) -> Figure | None:
        return self._figures.get(name)

    def __iter__(self) -> Iterator[Figure]:
        return iter(self._figures.values())

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self]


# -- the machine -----------------------------------------------------------------------------------


def describe_machine(apiserver_version: str) -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kube_apiserver": apiserver_version,
    }


# -- the control plane with an audit log -----------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    user: str
    verb: str
    resource: str  # resource or resource/subresource
    namespace: str
    code: int


class BenchPlane:
    """A fresh control plane whose API server logs every request, plus one kubeconfig per identity."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.audit_log = state_dir / "audit.log"
        policy = state_dir / "audit-policy.yaml"
        state_dir.mkdir(parents=True, exist_ok=True)
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        self.plane = ControlPlane(
            state_dir,
            extra_apiserver_args=[
                f"--audit-log-path={self.audit_log}",
                f"--audit-policy-file={policy}",
                "--audit-log-format=json",
            ],
        )

    def start(self) -> "BenchPlane":
        self.plane.start()
        return self

    def stop(self) -> None:
        self.plane.stop()

    def pids(self) -> dict[str, int]:
        return {proc.name: proc.popen.pid for proc in self.plane._procs}

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig authenticating as `user` (group system:masters)."""
        pki = self.plane.pki
        assert pki is not None
        path = self.state_dir / f"kubeconfig-{user}"
        if path.exists():
            return path
        cert, key = self.state_dir / f"{user}.crt", self.state_dir / f"{user}.key"
        issue_client_cert(pki.ca_cert, pki.ca_key, user, ["system:masters"], cert, key)
        path.write_text(yaml.safe_dump(self.plane.kubeconfig_dict(user, cert.read_bytes(), key.read_bytes())))
        path.chmod(0o600)
        return path

    def audit_offset(self) -> int:
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def read_audit(self, start: int, end: int | None = None) -> list[AuditRecord]:
        records: list[AuditRecord] = []
        with self.audit_log.open("rb") as handle:
            handle.seek(start)
            data = handle.read() if end is None else handle.read(end - start)
        for line in data.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by `end`
            ref = entry.get("objectRef") or {}
            resource = ref.get("resource") or entry.get("requestURI", "?").split("?")[0]
            if ref.get("subresource"):
                resource = f"{resource}/{ref['subresource']}"
            records.append(
                AuditRecord(
                    user=(entry.get("user") or {}).get("username", ""),
                    verb=entry.get("verb", ""),
                    resource=resource,
                    namespace=ref.get("namespace", ""),
                    code=int((entry.get("responseStatus") or {}).get("code", 0)),
                )
            )
        return records

    async def settle_audit(self, quiet: float = 1.0, timeout: float = 30.0) -> int:
        """Wait until the audit log stops growing for `quiet` seconds; returns its size."""
        deadline = time.monotonic() + timeout
        size, since = self.audit_offset(), time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            now_size = self.audit_offset()
            if now_size != size:
                size, since = now_size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return size


def count_requests(records: list[AuditRecord], user: str) -> Counter[str]:
    """Requests of one identity by 'verb resource'."""
    return Counter(f"{r.verb} {r.resource}" for r in records if r.user == user)


async def fetch_apiserver_version(plane: BenchPlane) -> str:
    def read() -> str:
        import ssl

        pki = plane.plane.pki
        assert pki is not None
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        with urllib.request.urlopen(f"{plane.plane.url}/version", context=ctx, timeout=5) as resp:
            version = str(json.loads(resp.read()).get("gitVersion", "?"))
        if version.startswith("v0.0.0"):  # built from Go modules without version stamping
            from kubernaut.devcluster.binaries import cache_dir

            version = f"{cache_dir().name} (kube-apiserver-etcd, pinned modules)"
        return version

    return await asyncio.to_thread(read)


async def prepare_cluster(plane: BenchPlane, namespaces: list[str], *, tekton_crds: bool = True) -> AsyncClient:
    """CRDs (Tekton's too unless Tekton installed its own) and namespaces; returns the bench's own client."""
    client = make_client(plane.kubeconfig_for(BENCH_USER))
    await install_crds(client, crd_paths(tekton_crds))
    for name in namespaces:
        with contextlib.suppress(ApiError):
            await client.create(Namespace(metadata=ObjectMeta(name=name, labels={MANAGED_LABEL: "true"})))
    await warm_up(client)
    return client


async def warm_up(client: AsyncClient, rounds: int = 40) -> None:
    """The first writes of each kind on a fresh API server are slow (storage and schema set up
    lazily); a few throwaway objects keep that out of every measurement."""
    from kubernaut.kube.resources import PipelineRunResource, RemediationRequestResource, WorkflowExecutionResource

    namespace = "bench-warmup"
    with contextlib.suppress(ApiError):
        await client.create(Namespace(metadata=ObjectMeta(name=namespace, labels={MANAGED_LABEL: "true"})))
    bodies = [
        (
            RemediationRequestResource,
            {
                "apiVersion": "kubernaut.ai/v1alpha1",
                "kind": "RemediationRequest",
                "spec": {
                    "signalFingerprint": "0" * 64,
                    "signalName": "Warmup",
                    "severity": "info",
                    "targetResource": {"kind": "Deployment", "name": "warmup", "namespace": namespace},
                },
            },
        ),
        (
            WorkflowExecutionResource,
            {
                "apiVersion": "kubernaut.ai/v1alpha1",
                "kind": "WorkflowExecution",
                "spec": {
                    "remediationRequestRef": {
                        "apiVersion": "kubernaut.ai/v1alpha1",
                        "kind": "RemediationRequest",
                        "name": "w",
                        "namespace": namespace,
                    },
                    "workflowRef": {"workflowId": "w", "version": "1", "containerImage": "w"},
                    "targetResource": "warmup/Deployment/w",
                },
            },
        ),
        (PipelineRunResource, {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "spec": {}}),
    ]
    for resource, body in bodies:
        for i in range(rounds):
            manifest = {**body, "metadata": {"name": f"warmup-{i}", "namespace": namespace}}
            await client.create(resource(manifest))
            await client.patch(
                resource.Status, f"warmup-{i}", {"status": {}}, namespace=namespace, patch_type=PatchType.MERGE
            )
        await client.deletecollection(resource, namespace=namespace)


# -- processes: the controllers and Tekton's part --------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace: float = 120.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")


def spawn(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Process:
    log_path = log_dir / f"{name}.log"
    handle = log_path.open("ab")
    popen = subprocess.Popen(
        argv,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    handle.close()
    return Process(name, popen, log_path)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by named processes between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        return {name: round(cpu_seconds(pid) - self._start[name], 2) for name, pid in self.pids.items()}


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


@dataclass
class Controllers:
    """`kubernaut run --controllers orchestrator,executor` as its own process and identity."""

    process: Process
    metrics_url: str

    async def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process.check_alive()
            if await asyncio.to_thread(_http_ok, f"{self.metrics_url}/readyz"):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("controllers not ready")

    async def metric(self, name: str) -> float:
        """The sum of a metric's samples as the controllers expose it now (0 when absent)."""
        text = await asyncio.to_thread(_http_text, f"{self.metrics_url}/metrics")
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


def _http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start_controllers(
    plane: BenchPlane, exec_namespace: str, *, cooldown: str = "1s", extra: dict[str, Any] | None = None
) -> Controllers:
    port = free_port()
    config: dict[str, Any] = {
        "execution": {"namespace": exec_namespace, "cooldown": cooldown},
        "routing": {"recentlyRemediatedCooldown": "0s"},
        "audit": {"url": f"sqlite:///{plane.state_dir / 'audit.db'}"},
        "manager": {"metricsAddress": f"127.0.0.1:{port}", "shutdownGracePeriod": "10s"},
        # the bench measures throughput: the gates are out of its way (its namespaces are managed)
        "limits": {
            "maxConcurrentExecutions": 100_000,
            "maxExecutionsPerHour": 10**9,
            "perNamespace": {"maxExecutionsPerHour": 10**9},
        },
        "breaker": {"failureThreshold": 100_000},
    }
    for key, value in (extra or {}).items():
        config[key] = {**config.get(key, {}), **value}
    config_path = plane.state_dir / "controllers.yaml"
    config_path.write_text(yaml.safe_dump(config))
    argv = [
        sys.executable,
        "-m",
        "kubernaut",
        "run",
        "--kubeconfig",
        str(plane.kubeconfig_for(CONTROLLERS_USER)),
        "--config",
        str(config_path),
        "--controllers",
        "orchestrator,executor",
    ]
    profile = os.environ.get("KUBERNAUT_BENCH_PROFILE")
    if profile:  # a directory: each controllers process writes a pyinstrument text report there
        Path(profile).mkdir(parents=True, exist_ok=True)
        report = Path(profile) / f"controllers-{time.time_ns()}.txt"
        argv[1:1] = ["-m", "pyinstrument", "-o", str(report)]
    cprofile = os.environ.get("KUBERNAUT_BENCH_CPROFILE")
    if cprofile:  # a directory: each controllers process writes a cProfile dump there (CPU per function)
        Path(cprofile).mkdir(parents=True, exist_ok=True)
        argv[1:1] = ["-m", "cProfile", "-o", str(Path(cprofile) / f"controllers-{time.time_ns()}.prof")]
    process = spawn("controllers", argv, plane.state_dir)
    return Controllers(process, f"http://127.0.0.1:{port}")


def start_tekton(plane: BenchPlane, exec_namespace: str) -> Process:
    """Tekton's part as the baseline plays it, in a process of its own (`tekton_main`)."""
    argv = [
        sys.executable,
        "-c",
        "import sys; from bench.common import tekton_main; tekton_main(sys.argv[1:])",
        str(plane.kubeconfig_for(TEKTON_USER)),
        exec_namespace,
    ]
    return spawn("tekton", argv, plane.state_dir)


def succeeded_status() -> dict[str, Any]:
    """The one status write with which Tekton's part reports a PipelineRun's success."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    condition = {
        "type": "Succeeded",
        "status": "True",
        "reason": "Succeeded",
        "message": "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 0",
        "lastTransitionTime": now,
    }
    return {"status": {"startTime": now, "completionTime": now, "conditions": [condition]}}


def tekton_main(args: list[str]) -> None:
    """Every new PipelineRun in the namespace succeeds at once, in one status write (as in the
    baseline), so that the system's cost over the baseline is the controllers' alone."""
    kubeconfig, namespace = Path(args[0]), args[1]

    async def succeed(client: AsyncClient, name: str) -> None:
        with contextlib.suppress(ApiError):  # deleted meanwhile
            await client.patch(
                PipelineRunResource.Status, name, succeeded_status(), namespace=namespace, patch_type=PatchType.MERGE
            )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        client = make_client(kubeconfig)
        pending: set[asyncio.Task[None]] = set()

        async def play() -> None:
            async for event, obj in client.watch(PipelineRunResource, namespace=namespace):
                body = obj.to_dict()
                if event == "ADDED" and not (body.get("status") or {}).get("conditions"):
                    task = asyncio.create_task(succeed(client, body["metadata"]["name"]))
                    pending.add(task)
                    task.add_done_callback(pending.discard)

        player = asyncio.create_task(play())
        try:
            await stop.wait()
        finally:
            player.cancel()
            await asyncio.gather(player, *pending, return_exceptions=True)
            await client.close()

    asyncio.run(main())


async def eventually(probe: Callable[[], Awaitable[Any]], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
