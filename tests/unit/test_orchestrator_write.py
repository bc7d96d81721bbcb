"""The orchestrator's status write carries only what its pass changed.

The gateway counts repeats of a signal in `status.deduplication` while the orchestrator routes the
request; the two writers share the status. A fake API server keeps one request, applies merge
patches with the resourceVersion precondition and answers 409 on a stale one, as the real one does.
"""

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubernaut.api.audit import AuditEvent
from kubernaut.config import parse_settings
from kubernaut.controllers import orchestrator
from kubernaut.controllers.kinds import RR_KIND
from kubernaut.controllers.manager import Manager
from kubernaut.kube.errors import Transient
from tests.unit.fake_api import FakeApi, Wire, build_unavailable

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NS = "team"
KEY = f"{NS}/rr-1"


class GatewayApi(FakeApi):
    def count_repeat(self) -> dict[str, Any]:
        """The gateway: one more occurrence of the signal."""
        dedup = self.body["status"]["deduplication"]
        dedup["occurrenceCount"] += 1
        dedup["lastSeenAt"] = "2026-05-01T12:00:05Z"
        self.bump()
        return copy.deepcopy(self.body)


class RepeatDuringPass:
    """An audit sink whose first record (between the pass's read and its write) lets the gateway count
    a repeat, delivered to the cache as the watch would."""

    def __init__(self, api: GatewayApi, manager: Manager) -> None:
        self.api = api
        self.manager = manager
        self.counted = False

    async def record(self, _event: AuditEvent) -> None:
        if not self.counted:
            self.counted = True
            self.manager.dispatch(RR_KIND.plural, "MODIFIED", self.api.count_repeat())


def build_rr(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {
            "name": "rr-1",
            "namespace": NS,
            "uid": "uid-rr-1",
            "resourceVersion": "7",
            "creationTimestamp": "2026-05-01T11:59:00Z",
        },
        "spec": {
            "signalFingerprint": "f" * 64,
            "signalName": "KubePodCrashLooping",
            "severity": "critical",
            "targetResource": {"kind": "Deployment", "name": "api", "namespace": NS},
            "workflowRef": {"workflowId": "restart", "version": "1.0.0", "containerImage": "registry/restart:1"},
        },
        "status": status,
    }


DEDUP = {"occurrenceCount": 1, "firstSeenAt": "2026-05-01T11:59:00Z", "lastSeenAt": "2026-05-01T11:59:00Z"}


@pytest.mark.parametrize(
    "status",
    [
        pytest.param({"deduplication": DEDUP}, id="new"),
        pytest.param(
            {
                "deduplication": DEDUP,
                "overallPhase": "Pending",
                "transitionCount": 1,
                "startTime": "2026-05-01T11:59:01Z",
            },
            id="pending",
        ),
    ],
)
async def test_a_count_raised_between_read_and_write_is_kept(status: dict[str, Any]) -> None:
    body = build_rr(copy.deepcopy(status))
    api = GatewayApi(body)
    settings = parse_settings(
        {"execution": {"namespace": "exec"}, "audit": {"url": "memory://"}, "scope": {"requireManagedLabel": False}}
    )
    manager = Manager(client=api, settings=settings, audit=None, clock=lambda: NOW)  # type: ignore[arg-type]
    manager.audit = RepeatDuringPass(api, manager)
    ro = orchestrator.setup(manager)
    manager.dispatch(RR_KIND.plural, "ADDED", body)

    await ro.reconcile(KEY)

    stored = api.body["status"]
    assert stored["overallPhase"] == "Executing"  # each phase that goes on at once, in one write
    assert [c["kind"] for c in api.created] == ["WorkflowExecution"]
    assert stored["deduplication"]["occurrenceCount"] == 2
    assert stored["deduplication"]["lastSeenAt"] == "2026-05-01T12:00:05Z"
    # the first write met the gateway's version (409), the retry went through on the fresh one
    assert len(api.status_patches) == 2
    assert all("deduplication" not in patch for patch in api.status_patches)
    assert (ro.rrs.get(KEY) or {})["status"]["deduplication"]["occurrenceCount"] == 2


class UnavailableOnce(FakeApi):
    """The API server answers the first status write with 503, writing nothing."""

    async def patch(self, resource: Any, name: str, body: dict[str, Any], **kwargs: Any) -> Wire:
        if not self.status_patches:
            self.status_patches.append(body["status"])
            raise build_unavailable()
        return await super().patch(resource, name, body, **kwargs)


class Recording:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)


async def test_a_transition_whose_write_failed_is_written_again_not_decided_afresh() -> None:
    # Its audit event is recorded before the write: deciding again later could decide another
    # transition under the same number, and the trail would hold a transition that never happened.
    body = build_rr({"deduplication": DEDUP, "overallPhase": "Pending", "transitionCount": 1})
    api = UnavailableOnce(body)
    settings = parse_settings(
        {"execution": {"namespace": "exec"}, "audit": {"url": "memory://"}, "scope": {"requireManagedLabel": False}}
    )
    clock = [NOW]
    manager = Manager(client=api, settings=settings, audit=None, clock=lambda: clock[0])  # type: ignore[arg-type]
    audit = Recording()
    manager.audit = audit  # type: ignore[assignment]
    ro = orchestrator.setup(manager)
    manager.dispatch(RR_KIND.plural, "ADDED", body)

    with pytest.raises(Transient):
        await ro.reconcile(KEY)
    recorded = [e.event_type for e in audit.events]
    clock[0] = NOW + timedelta(minutes=3)  # a pass deciding afresh would write other times
    await ro.reconcile(KEY)

    assert [e.event_type for e in audit.events] == recorded  # nothing recorded twice
    first, second = api.status_patches
    assert second == first  # the same change, written again
    assert api.body["status"]["overallPhase"] == "Executing"
    assert api.body["status"]["transitionCount"] == 3
