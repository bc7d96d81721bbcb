"""What the fault tests share: the operator as a killable process, a ledger of every PipelineRun
ever created, a mixed workload of remediations, and the checks that must hold whatever failed."""

import asyncio
import contextlib
import ctypes
import functools
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from kubernaut.api.audit import StoredAuditEvent, build_event_id
from kubernaut.audit.factory import open_audit_store
from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.domain.pipelinerun import ANNOTATION_TARGET_RESOURCE, LABEL_SOURCE_NAMESPACE, LABEL_WORKFLOW_EXECUTION
from kubernaut.kube.faults import ENV_VAR as FAULT_ENV
from kubernaut.kube.resources import (
    NotificationRequestResource,
    PipelineRunResource,
    RemediationRequestResource,
    TaskRunResource,
    WorkflowExecutionResource,
)
from tests.integration.harness import TEST_THROUGHPUT, eventually
from tests.integration.rr import fingerprint, rr_manifest
from tests.integration.tekton_support import played

TERMINAL = {"Completed", "Failed", "TimedOut", "Skipped", "Cancelled"}


DEADLINE_SECONDS = 280.0


def deadline(
    seconds: float = DEADLINE_SECONDS,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """Fail an async test that is not done in time with a traceback showing where it waited, inside
    the test (before pytest-timeout, which would leave the coroutine pending in the shared loop)."""

    def wrap(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        @functools.wraps(test)
        async def bounded(*args: Any, **kwargs: Any) -> None:
            async with asyncio.timeout(seconds):
                await test(*args, **kwargs)

        return bounded

    return wrap


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills the operator if the test process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


# -- the operator process ---------------------------------------------------------------------------


def write_operator_config(path: Path, exec_ns: str, audit_db: Path, **sections: dict[str, Any]) -> Path:
    """A `kubernaut run --config` file with short durations; `sections` override or add keys."""
    data: dict[str, Any] = {
        "execution": {"namespace": exec_ns, "cooldown": "2s"},
        "routing": {"recentlyRemediatedCooldown": "1s", "backoffBase": "1s", "backoffMax": "2s"},
        "audit": {"url": f"sqlite:///{audit_db}", "flushInterval": "200ms"},
        "manager": {"metricsAddress": f"127.0.0.1:{free_port()}", "shutdownGracePeriod": "20s"},
        **TEST_THROUGHPUT,
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Operator:
    """`kubernaut run` as a child process: started, killed with SIGKILL, restarted; stderr kept per run."""

    kubeconfig: Path
    log_dir: Path
    controllers: str = "orchestrator,executor"
    runs: int = 0
    kills: int = 0
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def start(
        self, config: Path, *, faults: str = "", extra_env: dict[str, str] | None = None, verbose: bool = False
    ) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.runs += 1
        log = self.log_dir / f"operator-{self.runs}.log"
        self.logs.append(log)
        env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
        if faults:
            env[FAULT_ENV] = faults
        env.update(extra_env or {})
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kubernaut",
                    "run",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--config",
                    str(config),
                    "--controllers",
                    self.controllers,
                    *(["--verbose"] if verbose else []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )
        self.metrics_url = "http://" + yaml.safe_load(config.read_text())["manager"]["metricsAddress"]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /readyz answers 200 (caches listed, watches started)."""

        async def ready() -> bool:
            if not self.running:
                raise AssertionError(f"operator exited with {self.process and self.process.returncode}: {self.tail()}")
            return await asyncio.to_thread(_http_ok, f"{self.metrics_url}/readyz")

        await eventually(ready, timeout=timeout, interval=0.1, what="operator ready")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, exactly like a node losing the pod."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.kills += 1
        self.process.wait(10)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        process = self.process
        code = await eventually(
            lambda: _async(process.poll() is not None), timeout=timeout, interval=0.05, what="operator exit"
        )
        assert code
        return int(process.returncode)

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path, which also delivers the audit outbox."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    def tail(self, chars: int = 4000) -> str:
        return self.logs[-1].read_text(errors="replace")[-chars:] if self.logs else ""

    def all_logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


async def _async(value: bool) -> bool:
    return value


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


# -- the PipelineRun ledger -------------------------------------------------------------------------


@dataclass
class PipelineRunLedger:
    """Every PipelineRun seen in the execution namespace, from our own watch (resumed across API
    server restarts): which WorkflowExecution it ran for and whether two ever held one target at once."""

    kube: AsyncClient
    namespace: str
    uids_by_wfe: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    live_by_target: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    target_of: dict[str, str] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    created: int = 0
    reconnects: int = 0

    def _seen(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        uid = meta["uid"]
        if uid in self.target_of:
            return
        labels = meta.get("labels") or {}
        target = (meta.get("annotations") or {}).get(ANNOTATION_TARGET_RESOURCE, meta["name"])
        self.created += 1
        self.target_of[uid] = target
        self.uids_by_wfe[f"{labels.get(LABEL_SOURCE_NAMESPACE)}/{labels.get(LABEL_WORKFLOW_EXECUTION)}"].add(uid)
        if self.live_by_target[target]:
            self.overlaps.append(f"{target}: {uid} while {sorted(self.live_by_target[target])} still exist")
        self.live_by_target[target].add(uid)

    def _gone(self, obj: dict[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        self.live_by_target[self.target_of.get(uid, "")].discard(uid)

    async def run(self, stop: asyncio.Event) -> None:
        version: str | None = None
        while not stop.is_set():
            try:
                if version is None:
                    listing = self.kube.list(PipelineRunResource, namespace=self.namespace)
                    present = set()
                    async for item in listing:
                        body = item.to_dict()
                        present.add(body["metadata"]["uid"])
                        self._seen(body)
                    for uids in self.live_by_target.values():
                        uids.intersection_update(present)
                    version = listing.resourceVersion
                async for kind, obj in self.kube.watch(
                    PipelineRunResource, namespace=self.namespace, resource_version=version
                ):
                    body = obj.to_dict()
                    version = body["metadata"]["resourceVersion"]
                    if kind == "DELETED":
                        self._seen(body)
                        self._gone(body)
                    else:
                        self._seen(body)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                self.reconnects += 1
                if exc.status.code == 410:
                    version = None
                await asyncio.sleep(0.2)
            except Exception:
                self.reconnects += 1
                await asyncio.sleep(0.2)

    def more_than_one_per_wfe(self) -> dict[str, int]:
        return {wfe: len(uids) for wfe, uids in self.uids_by_wfe.items() if len(uids) > 1}


@contextlib.asynccontextmanager
async def background(*runners: Any) -> AsyncIterator[None]:
    """Run each `runner.run(stop)` as a task for the duration of the block."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(runner.run(stop)) for runner in runners]
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the workload -----------------------------------------------------------------------------------


@dataclass
class Workload:
    """A reproducible mix: successes on a small pool of shared targets (busy and recently-remediated
    blocks), execution failures on targets of their own, and duplicates of active signals."""

    kube: AsyncClient
    namespace: str
    seed: int = 7
    targets: int = 6
    created: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    _fingerprints: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    async def create(self, count: int) -> None:
        for _ in range(count):
            await self.create_one()

    async def create_one(self) -> str:
        index = len(self.created)
        name = f"rr-{index:04d}"
        roll = self.random.random()
        if roll < 0.1 and self._fingerprints:
            kind, fp = "duplicate", self.random.choice(self._fingerprints[-5:])
            target = {"kind": "Deployment", "name": f"dup-{fp[:8]}", "namespace": self.namespace}
            bundle = played("succeed:1tasks-1s")
        elif roll < 0.2:
            kind, fp = "fails", fingerprint(f"{self.namespace}-{name}")
            target = {"kind": "Deployment", "name": f"broken-{index}", "namespace": self.namespace}
            bundle = played("fail:task1of1-exit3-500ms")
        else:
            kind, fp = "succeeds", fingerprint(f"{self.namespace}-{name}")
            target = {
                "kind": "Deployment",
                "name": f"app-{self.random.randrange(self.targets)}",
                "namespace": self.namespace,
            }
            bundle = played(f"succeed:1tasks-{self.random.choice(['300ms', '1s', '2s'])}")
        if kind == "succeeds" and self.random.random() < 0.3:
            self._fingerprints.append(fp)
            target = {"kind": "Deployment", "name": f"dup-{fp[:8]}", "namespace": self.namespace}
        await self.kube.create(
            RemediationRequestResource(rr_manifest(name, self.namespace, target=target, fp=fp, bundle=bundle))
        )
        self.created.append(name)
        self.kinds[kind] += 1
        return name


# -- what must hold ---------------------------------------------------------------------------------

RR_TYPES = (
    "orchestrator.lifecycle.started",
    "orchestrator.phase.transitioned",
    "orchestrator.routing.blocked",
    "orchestrator.lifecycle.completed",
    "orchestrator.effectiveness.assessed",
)
WFE_TYPES = ("workflow.started", "workflow.completed", "workflow.failed")


@dataclass
class Snapshot:
    rrs: list[dict[str, Any]]
    wfes: list[dict[str, Any]]
    pipelineruns: list[dict[str, Any]]


async def take_snapshot(kube: AsyncClient, namespace: str, exec_ns: str) -> Snapshot:
    rrs = [o.to_dict() async for o in kube.list(RemediationRequestResource, namespace=namespace)]
    wfes = [o.to_dict() async for o in kube.list(WorkflowExecutionResource, namespace=namespace)]
    prs = [o.to_dict() async for o in kube.list(PipelineRunResource, namespace=exec_ns)]
    return Snapshot(rrs, wfes, prs)


def unsettled(snapshot: Snapshot) -> list[str]:
    """Requests neither terminal nor in a block that lasts (a failure streak, an unexpired back-off)."""
    now = datetime.now(UTC)
    left = []
    for rr in snapshot.rrs:
        status = rr.get("status") or {}
        phase = status.get("overallPhase")
        if phase in TERMINAL:
            continue
        until = parse_time(status.get("blockedUntil"))
        lasting = status.get("blockReason") in ("ConsecutiveFailures", "ExponentialBackoff")
        if phase == "Blocked" and lasting and until and until > now + timedelta(seconds=30):
            continue
        left.append(f"{rr['metadata']['name']}:{phase}:{status.get('blockReason', '')}")
    return left


async def wait_settled(kube: AsyncClient, namespace: str, exec_ns: str, timeout: float) -> Snapshot:
    async def settled() -> Snapshot | None:
        snapshot = await take_snapshot(kube, namespace, exec_ns)
        return snapshot if not unsettled(snapshot) else None

    try:
        return await eventually(settled, timeout=timeout, interval=0.5, what="every request settled")
    except AssertionError:
        snapshot = await take_snapshot(kube, namespace, exec_ns)
        raise AssertionError(f"not settled after {timeout}s: {unsettled(snapshot)}\n{describe(snapshot)}") from None


def describe(snapshot: Snapshot) -> str:
    """The executions and PipelineRuns that are not finished, for a failure message."""
    lines = []
    for wfe in snapshot.wfes:
        status = wfe.get("status") or {}
        if status.get("phase") not in ("Completed", "Failed"):
            conditions = [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []]
            lines.append(
                f"WFE {wfe['metadata']['name']} {status.get('phase')} {wfe['spec']['targetResource']} {conditions}"
            )
    for pr in snapshot.pipelineruns:
        status = pr.get("status") or {}
        conditions = [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []]
        labels = pr["metadata"].get("labels") or {}
        lines.append(f"PR {pr['metadata']['name']} of {labels.get(LABEL_WORKFLOW_EXECUTION)} {conditions}")
    return "\n".join(lines)


async def wait_locks_released(kube: AsyncClient, exec_ns: str, cooldown: float, timeout: float) -> None:
    """No PipelineRun outlives its cooldown by more than the time a pass takes to notice."""

    async def none_left() -> bool:
        return not [o async for o in kube.list(PipelineRunResource, namespace=exec_ns)]

    await eventually(none_left, timeout=timeout, interval=0.2, what="every lock released")


def overdue_locks(snapshot: Snapshot, cooldown: timedelta, slack: timedelta) -> list[str]:
    """PipelineRuns whose WorkflowExecution ended more than cooldown + slack ago."""
    ended = {
        f"{w['metadata']['namespace']}/{w['metadata']['name']}": parse_time(
            (w.get("status") or {}).get("completionTime")
        )
        for w in snapshot.wfes
    }
    now = datetime.now(UTC)
    overdue = []
    for pr in snapshot.pipelineruns:
        labels = pr["metadata"].get("labels") or {}
        done = ended.get(f"{labels.get(LABEL_SOURCE_NAMESPACE)}/{labels.get(LABEL_WORKFLOW_EXECUTION)}")
        if done is not None and now - done > cooldown + slack:
            overdue.append(f"{pr['metadata']['name']} (ended {now - done} ago)")
    return overdue


async def read_audit(audit_db: Path) -> list[StoredAuditEvent]:
    async with open_audit_store(f"sqlite:///{audit_db}", create=False) as store:
        return await store.list_events()


def read_outbox_ids(audit_db: Path) -> set[str]:
    """Event ids waiting in the writer's outbox (recorded, not yet delivered to the store)."""
    path = audit_db.with_name(audit_db.name + ".outbox")
    if not path.exists():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT event_id FROM outbox")}
    finally:
        conn.close()


def audit_verify(audit_db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubernaut", "audit", "verify", "--audit-url", f"sqlite:///{audit_db}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def check_rr_audit(rr: dict[str, Any], events: Iterable[StoredAuditEvent]) -> list[str]:
    """Exactly one audit event per transition the request made, none for a transition it did not
    make: transition k (1..transitionCount) owns exactly one event id, derived from (uid, type, k)."""
    meta, status = rr["metadata"], rr.get("status") or {}
    uid, count = meta["uid"], int(status.get("transitionCount") or 0)
    by_id = {build_event_id(uid, t, str(k)): (t, k) for t in RR_TYPES for k in range(0, count + 5)}
    at: dict[int, list[str]] = defaultdict(list)
    problems = []
    for event in events:
        where = by_id.get(event.event_id)
        if where is None or where[1] < 1 or where[1] > count:
            problems.append(f"{meta['name']}: event {event.event_type} {event.event_id} matches no transition")
            continue
        at[where[1]].append(where[0].rsplit(".", 1)[-1])
    phase = status.get("overallPhase")
    for k in range(1, count + 1):
        kinds = sorted(at.get(k, []))
        allowed = [["started"]] if k == 1 else [["transitioned"], ["blocked"], ["completed"]]
        if k == count and status.get("skipReason") == "PreviousExecutionFailed":
            allowed = [["blocked", "completed"]]
        if k == count and status.get("effectiveness"):
            allowed = [["assessed", "completed"]]
        if kinds not in allowed:
            problems.append(f"{meta['name']}: transition {k} of {count} has events {kinds}, expected one of {allowed}")
    last = sorted(at.get(count, []))
    if phase in TERMINAL and "completed" not in last:
        problems.append(f"{meta['name']}: {phase} without lifecycle.completed")
    if phase == "Blocked" and last != ["blocked"]:
        problems.append(f"{meta['name']}: Blocked, last event {last}")
    return problems


def failures_of(wfe: dict[str, Any]) -> str | None:
    return ((wfe.get("status") or {}).get("failureDetails") or {}).get("reason")


def check_wfe_audit(wfe: dict[str, Any], events: list[StoredAuditEvent]) -> list[str]:
    status = wfe.get("status") or {}
    counts = Counter(e.event_type for e in events)
    expected = Counter[str]()
    if status.get("startTime"):
        expected["workflow.started"] = 1
    if status.get("phase") == "Completed":
        expected["workflow.completed"] = 1
    if status.get("phase") == "Failed":
        expected["workflow.failed"] = 1
    if counts != expected:
        return [f"{wfe['metadata']['name']}: audit {dict(counts)}, expected {dict(expected)}"]
    return []


@dataclass
class Verdict:
    problems: list[str]
    figures: dict[str, Any]


async def check_invariants(
    kube: AsyncClient,
    namespace: str,
    exec_ns: str,
    audit_db: Path,
    ledger: PipelineRunLedger,
) -> Verdict:
    """Everything that must hold after any fault (the operator is stopped, its outbox delivered)."""
    snapshot = await take_snapshot(kube, namespace, exec_ns)
    problems = [f"unsettled: {name}" for name in unsettled(snapshot)]
    owners: Counter[str] = Counter()
    for wfe in snapshot.wfes:
        for owner in wfe["metadata"].get("ownerReferences") or []:
            owners[owner["uid"]] += 1
    problems += [f"request {uid} has {n} WorkflowExecutions" for uid, n in owners.items() if n > 1]
    problems += [f"{wfe} had {n} PipelineRuns" for wfe, n in ledger.more_than_one_per_wfe().items()]
    problems += [f"two PipelineRuns at once on {overlap}" for overlap in ledger.overlaps]
    races = [w["metadata"]["name"] for w in snapshot.wfes if failures_of(w) == "ExecutionRaceCondition"]
    problems += [f"{name} lost the race for the lock: routing let two executions through" for name in races]
    events = await read_audit(audit_db)
    mine = [e for e in events if e.namespace == namespace]
    by_resource: dict[tuple[str, str], list[StoredAuditEvent]] = defaultdict(list)
    for event in mine:
        by_resource[(event.resource_type, event.resource_id)].append(event)
    for rr in snapshot.rrs:
        problems += check_rr_audit(rr, by_resource.pop(("RemediationRequest", rr["metadata"]["name"]), []))
    for wfe in snapshot.wfes:
        problems += check_wfe_audit(wfe, by_resource.pop(("WorkflowExecution", wfe["metadata"]["name"]), []))
    problems += [f"audit events for unknown {kind}/{name}: {len(ev)}" for (kind, name), ev in by_resource.items()]
    verified = audit_verify(audit_db)
    if verified.returncode != 0:
        problems.append(f"audit verify failed: {verified.stdout}{verified.stderr}")
    phases = Counter((rr.get("status") or {}).get("overallPhase") for rr in snapshot.rrs)
    failures = Counter(
        ((w.get("status") or {}).get("failureDetails") or {}).get("reason")
        for w in snapshot.wfes
        if (w.get("status") or {}).get("phase") == "Failed"
    )
    figures = {
        "requests": len(snapshot.rrs),
        "phases": dict(phases),
        "workflow_executions": len(snapshot.wfes),
        "execution_failures": dict(failures),
        "pipelineruns_created": ledger.created,
        "audit_events": len(mine),
        "ledger_reconnects": ledger.reconnects,
    }
    return Verdict(problems, figures)


async def clear_cluster(kube: AsyncClient) -> None:
    """Remove every object our kinds left behind in any namespace (there is no namespace controller
    here to do it): an operator watching the whole cluster then sees only its own test's objects."""
    for resource in (RemediationRequestResource, NotificationRequestResource, PipelineRunResource, TaskRunResource):
        async for obj in kube.list(resource, namespace="*"):
            with contextlib.suppress(ApiError):
                await kube.delete(resource, obj.metadata.name, namespace=obj.metadata.namespace)
    async for obj in kube.list(WorkflowExecutionResource, namespace="*"):
        with contextlib.suppress(ApiError):
            if obj.metadata.finalizers:
                await kube.patch(
                    WorkflowExecutionResource,
                    obj.metadata.name,
                    {"metadata": {"finalizers": None}},
                    namespace=obj.metadata.namespace,
                    patch_type=PatchType.MERGE,
                )
            await kube.delete(WorkflowExecutionResource, obj.metadata.name, namespace=obj.metadata.namespace)


async def restart_etcd(plane: ControlPlane, down_for: float = 0.0, timeout: float = 60.0) -> None:
    """Stop etcd gracefully and start it again with the same arguments (same ports, same data)."""
    etcd = next(p for p in plane._procs if p.name == "etcd")
    argv = [str(a) for a in etcd.popen.args]  # type: ignore[union-attr]
    await asyncio.to_thread(etcd.stop)
    plane._procs.remove(etcd)
    await asyncio.sleep(down_for)
    proc = plane._spawn("etcd", argv)
    deadline = time.monotonic() + timeout
    health = f"http://127.0.0.1:{plane.etcd_port}/health"
    while not await asyncio.to_thread(_http_ok, health):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"etcd did not come back: {(plane.state_dir / 'etcd.log').read_text()[-2000:]}")
        await asyncio.sleep(0.2)
