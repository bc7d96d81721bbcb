"""The scripted story `make demo` tells on the local default: one remediation of each kind.

Each step creates RemediationRequests through the API, as Alertmanager or a person would; the
live table shows what the orchestrator decided for each and why.
"""

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from kubernaut.api.v1alpha1 import RemediationRequest
from kubernaut.domain.columns import layout
from kubernaut.domain.duration import format_go_duration
from kubernaut.domain.execution import ANNOTATION_CLEAR_BLOCK
from kubernaut.kube.client import patch_object
from kubernaut.kube.resources import RemediationRequestResource, WorkflowExecutionResource

NAMESPACE = "demo"


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the start
    say: str
    create: tuple[tuple[str, str, str, str, str], ...] = ()  # (rr name, signal, kind, target name, fingerprint seed)
    clear_block_of: str = ""  # the RR whose failed WFE an operator clears
    source: str = "demo"  # "alertmanager": the request is verified against its alert


STORY = (
    Step(
        0,
        "A crash-looping Deployment: the catalog selects restart-deployment, which succeeds.",
        (("checkout-crashloop", "KubePodCrashLooping", "Deployment", "checkout", "checkout-crash"),),
    ),
    Step(
        1,
        "The same alert again while it runs: a duplicate, it will share the original's outcome.",
        (("checkout-crashloop-again", "KubePodCrashLooping", "Deployment", "checkout", "checkout-crash"),),
    ),
    Step(
        2,
        "Another signal on the same Deployment: the target is busy (its PipelineRun is the lock); it "
        "waits, then meets the cooldown after the success, then runs by itself.",
        (("checkout-errors", "HighErrorRate", "Deployment", "checkout", "checkout-errors"),),
    ),
    Step(
        3,
        "A NotReady node: cordon-node cannot even start (image pull): a failure before execution.",
        (("worker-1-notready", "KubeNodeNotReady", "Node", "worker-1", "worker-1-a"),),
    ),
    Step(
        5,
        "An alert on the cart Deployment: restart-deployment succeeds, but the alert keeps firing "
        "through the verification window, so the remediation ends Ineffective.",
        (("cart-crashloop", "KubePodCrashLooping", "Deployment", "cart", "cart-crash"),),
        source="alertmanager",
    ),
    Step(
        8,
        "The node alert fires again: the target is in exponential back-off after that failure.",
        (("worker-1-notready-again", "KubeNodeNotReady", "Node", "worker-1", "worker-1-b"),),
    ),
    Step(
        14,
        "A stuck rollout: rollback-deployment fails during execution (task 2, exit 1); a person must "
        "review it (a manual-review notification is created).",
        (("payments-stuck", "KubeDeploymentRolloutStuck", "Deployment", "payments", "payments-a"),),
    ),
    Step(
        30,
        "The rollout alert again: the previous run failed mid-execution, so nothing runs until a "
        "person clears the block.",
        (("payments-stuck-again", "KubeDeploymentRolloutStuck", "Deployment", "payments", "payments-b"),),
    ),
    Step(
        36,
        "An operator checked the cluster: `kubernaut clear-block we-payments-stuck --reason ...`.",
        clear_block_of="payments-stuck",
    ),
    Step(
        40,
        "The next alert on the rollout runs the workflow again.",
        (("payments-stuck-third", "KubeDeploymentRolloutStuck", "Deployment", "payments", "payments-c"),),
    ),
)


NODES = tuple(sorted({target for step in STORY for _, _, kind, target, _ in step.create if kind == "Node"}))
"""The Node targets of the story; `kubernaut dev up --demo` creates them, opted in."""


def build_request(name: str, signal: str, kind: str, target: str, seed: str, source: str = "demo") -> dict[str, Any]:
    namespaced = kind != "Node"
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "signalFingerprint": hashlib.sha256(seed.encode()).hexdigest(),
            "signalName": signal,
            "severity": "critical",
            "targetResource": {"kind": kind, "name": target, **({"namespace": NAMESPACE} if namespaced else {})},
            "source": source,
        },
    }


def _why(rr: RemediationRequest, now: datetime | None) -> str:
    """Why a request waits or ended as it did; with `now`, how long a block has left."""
    status = rr.status
    why = status.block_reason or status.skip_reason or status.failure_reason or ""
    if now is not None and status.blocked_until and status.overall_phase == "Blocked":
        why += f" ({format_go_duration(max(status.blocked_until - now, now - now))} left)"
    return why


# No WFE column: it is always we-<name>, and 80 columns are better spent on names and reasons.
DEMO_COLUMNS = ("NAME", "PHASE", "TARGET", "WHY", "OUTCOME")


def build_rows(requests: list[RemediationRequest], now: datetime) -> list[list[str]]:
    """The live table's cells, one row per request."""
    rows = []
    for rr in requests:
        status = rr.status
        target = rr.spec.target_resource
        rows.append(
            [
                rr.metadata.name,
                str(status.overall_phase or "New"),
                f"{target.kind}/{target.name}",
                _why(rr, now),
                str(status.outcome or ""),
            ]
        )
    return rows


def build_status_line(rr: RemediationRequest) -> str:
    """What the plain story prints when a request changes: its phase, why, WFE and outcome."""
    status = rr.status
    line = f"  {rr.metadata.name}: {status.overall_phase or 'New'}"
    if why := _why(rr, None):
        line += f" ({why})"
    if status.workflow_execution_ref:
        line += f", {status.workflow_execution_ref.name}"
    if status.outcome:
        line += f", outcome {status.outcome}"
    return line


class _LiveStory:
    """On a terminal: the narration scrolls above a table that refreshes in place, fitted to the
    terminal's width."""

    def __init__(self, console: Console) -> None:
        self._live = Live(console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> "_LiveStory":
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def say(self, text: str) -> None:
        self._live.console.print(f"[cyan]▶[/cyan] {escape(text)}", highlight=False)

    def show(self, requests: list[RemediationRequest]) -> None:
        lines = layout(DEMO_COLUMNS, build_rows(requests, datetime.now(UTC)), self._live.console.width)
        table = Text()
        table.append(f"RemediationRequests (namespace {NAMESPACE})\n{lines[0]}", style="bold")
        table.append("".join(f"\n{line}" for line in lines[1:]))
        self._live.update(table)


class _PlainStory:
    """Piped: plain lines, one each time a request changes."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._shown: dict[str, str] = {}

    def __enter__(self) -> "_PlainStory":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def say(self, text: str) -> None:
        self._console.print(f"▶ {text}", markup=False, highlight=False)

    def show(self, requests: list[RemediationRequest]) -> None:
        for rr in requests:
            line = build_status_line(rr)
            if self._shown.get(rr.metadata.name) != line:
                self._shown[rr.metadata.name] = line
                self._console.print(line, markup=False, highlight=False)


async def _list(client: AsyncClient) -> list[RemediationRequest]:
    found = [
        RemediationRequest.from_wire(o.to_dict())
        async for o in client.list(RemediationRequestResource, namespace=NAMESPACE)
    ]
    return sorted(
        found, key=lambda rr: (rr.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC), rr.metadata.name)
    )


async def run_story(client: AsyncClient, stop: asyncio.Event, say: Callable[[str], None]) -> None:
    """Play the story, showing the requests until every one is terminal (or `stop`)."""
    console = Console(soft_wrap=True)
    started = asyncio.get_running_loop().time()
    pending = list(STORY)
    with _LiveStory(console) if console.is_terminal else _PlainStory(console) as story:
        while not stop.is_set():
            elapsed = asyncio.get_running_loop().time() - started
            while pending and pending[0].at <= elapsed:
                step = pending.pop(0)
                story.say(step.say)
                for spec in step.create:
                    try:
                        await client.create(RemediationRequestResource(build_request(*spec, source=step.source)))
                    except ApiError as exc:
                        if exc.status.code != 409:
                            raise
                if step.clear_block_of:
                    await patch_object(
                        client,
                        WorkflowExecutionResource,
                        f"we-{step.clear_block_of}",
                        NAMESPACE,
                        {"metadata": {"annotations": {ANNOTATION_CLEAR_BLOCK: "demo: checked by ops"}}},
                    )
            requests = await _list(client)
            story.show(requests)
            if not pending and requests and all(rr.is_terminal for rr in requests):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    say(
        "The story is told: `kubernaut get remediations` and `kubernaut describe remediation NAME -n demo` "
        "show it again; `kubernaut audit list` shows the audit trail."
    )
