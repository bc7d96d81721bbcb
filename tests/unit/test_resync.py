"""Which objects each controller resyncs: the unfinished ones, every `manager.resyncPeriod`."""

from pathlib import Path
from typing import Any

import pytest

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.config import parse_settings
from kubernaut.controllers import executor, orchestrator
from kubernaut.controllers.kinds import NR_KIND, RR_KIND, WFE_KIND
from kubernaut.controllers.manager import Manager
from kubernaut.controllers.notifier import Notifier
from kubernaut.domain import execution as ex
from kubernaut.kube.client import make_client
from kubernaut.kube.runtime import Controller, Result


@pytest.fixture
def manager(kubeconfig: Path) -> Manager:
    """A client that is never used: only the controllers' view of their caches is asked here."""
    settings = parse_settings({"audit": {"url": "memory://"}, "manager": {"resyncPeriod": "45s"}})
    return Manager(client=make_client(kubeconfig), settings=settings, audit=MemoryAuditSink())


def body(kind: str, name: str, status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": "1", **meta},
        "status": status,
    }


def test_the_manager_gives_its_controllers_the_resync_period(manager: Manager) -> None:
    async def reconcile(_key: str) -> Result:  # pragma: no cover - never reconciled
        return Result.done()

    default = manager.add_controller(Controller("a", reconcile, finished=lambda _key: False))
    own = manager.add_controller(Controller("b", reconcile, finished=lambda _key: False, resync_period=5))
    assert default.resync_period == 45
    assert own.resync_period == 5
    assert default.next_pass("k", Result.done()) == 45


@pytest.mark.parametrize(
    ("status", "meta", "finished"),
    [
        ({}, {}, False),  # new
        ({"overallPhase": "Pending"}, {}, False),
        ({"overallPhase": "Analyzing"}, {}, False),
        ({"overallPhase": "Executing"}, {}, False),
        ({"overallPhase": "Blocked"}, {}, False),
        ({"overallPhase": "Completed"}, {}, True),
        ({"overallPhase": "Failed"}, {}, True),
        ({"overallPhase": "TimedOut"}, {}, True),
        ({"overallPhase": "Skipped"}, {}, True),
        ({"overallPhase": "Cancelled"}, {}, True),
        ({"overallPhase": "Executing"}, {"deletionTimestamp": "2026-01-01T00:00:00Z"}, True),
    ],
)
def test_the_orchestrator_resyncs_requests_until_they_are_terminal(
    manager: Manager, status: dict[str, Any], meta: dict[str, Any], finished: bool
) -> None:
    ro = orchestrator.setup(manager)
    manager.dispatch(RR_KIND.plural, "ADDED", body("RemediationRequest", "rr", status, **meta))
    assert ro.finished("ns/rr") is finished
    assert ro.controller.next_pass("ns/rr", Result.done()) == (None if finished else 45)
    assert ro.finished("ns/gone")


@pytest.mark.parametrize(
    ("status", "meta", "finished"),
    [
        ({}, {}, False),
        ({"phase": "Pending"}, {}, False),
        ({"phase": "Running"}, {}, False),
        ({"phase": "Completed"}, {}, True),  # its cooldown asks for its own pass
        ({"phase": "Failed"}, {}, True),
        ({"phase": "Running"}, {"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": [ex.FINALIZER]}, False),
        ({"phase": "Completed"}, {"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["other"]}, True),
    ],
)
def test_the_executor_resyncs_executions_until_they_end(
    manager: Manager, status: dict[str, Any], meta: dict[str, Any], finished: bool
) -> None:
    we = executor.setup(manager)
    manager.dispatch(WFE_KIND.plural, "ADDED", body("WorkflowExecution", "we", status, **meta))
    assert we.finished("ns/we") is finished
    assert we.controller.next_pass("ns/we", Result.after(300)) == (300 if finished else 45)
    assert we.finished("ns/gone")


@pytest.mark.parametrize(
    ("phase", "finished"),
    [
        (None, False),
        ("Pending", False),
        ("Sending", False),
        ("Retrying", False),
        ("Sent", True),
        ("PartiallySent", True),
        ("Failed", True),
    ],
)
def test_the_notifier_resyncs_requests_until_delivery_is_final(
    manager: Manager, phase: str | None, finished: bool
) -> None:
    notifier = Notifier(manager)
    manager.dispatch(NR_KIND.plural, "ADDED", body("NotificationRequest", "nr", {"phase": phase} if phase else {}))
    assert notifier.finished("ns/nr") is finished
    assert notifier.finished("ns/gone")
