"""Bad input through the real API server while the controllers run: generated requests, executions
and catalog entries with malformed targets, names at and beyond Kubernetes' limits, unicode, huge
parameter maps. The API server refuses what its schema refuses (4xx, never 5xx); whatever it accepts
ends in a clear phase with a message, without a controller crashing, looping or holding up others.

The generating tests run first and leave what was accepted in `ACCEPTED`; the last test waits for
all of it and checks the aftermath (pytest runs a module's tests in file order)."""

import copy
import string
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from prometheus_client import REGISTRY

from kubernaut.kube.resources import (
    RemediationRequestResource,
    RemediationWorkflowResource,
    WorkflowExecutionResource,
)
from tests.faults.conftest import long_run
from tests.faults.passes import counting
from tests.faults.support import TERMINAL, deadline
from tests.integration.harness import create_execution_namespace, create_namespace, eventually, running, settings_for
from tests.integration.rr import fingerprint, rr_manifest
from tests.integration.tekton_support import missing, played

pytestmark = pytest.mark.tekton

EXAMPLES = 150 if long_run() else 30
LABEL = "faults.kubernaut.ai/bad-input"


@dataclass
class Garbage:
    """Namespaces for the generated objects and what the API server accepted of them."""

    at_start: str  # objects created before the controllers start: they meet them in the first LIST
    live: str  # the same objects created again while the controllers run: they meet them on the watch
    exec_ns: str
    accepted: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"rr": [], "wfe": [], "workflow": []})
    refused: dict[int, int] = field(default_factory=dict)

    def refuse(self, exc: ApiError) -> None:
        code = exc.status.code
        assert 400 <= code < 500, f"the API server answered {code}: {exc.status.message}"
        self.refused[code] = self.refused.get(code, 0) + 1


def reconcile_total(namespace: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "kubernaut_remediationorchestrator_reconcile":
            total += sum(
                s.value for s in metric.samples if s.name.endswith("_total") and s.labels.get("namespace") == namespace
            )
    return total


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def garbage(kube: AsyncClient) -> AsyncIterator[Garbage]:
    yield Garbage(
        await create_namespace(kube, "bad"), await create_namespace(kube, "bad"), await create_execution_namespace(kube)
    )
    async for entry in kube.list(RemediationWorkflowResource, labels={LABEL: "true"}):
        await kube.delete(RemediationWorkflowResource, entry.metadata.name)


# -- what gets generated ----------------------------------------------------------------------------
# Each object starts valid and gets one or two parts replaced by something nasty, so that the API
# server accepts many of them and the controllers get to see the nastiness.

DNS_CHARS = string.ascii_lowercase + string.digits + "-."
nasty = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=80),
    st.sampled_from(
        ["", " ", "/", "a/b", "a/b/c/d", "//", "../etc", "\u2603", "ns/Kind/name", "x" * 300, "-1s", "1e9h"]
    ),
    st.integers(min_value=250, max_value=70_000).map(lambda n: "n" * n),
)
names = st.one_of(
    st.text(alphabet=DNS_CHARS, min_size=1, max_size=40).map(lambda s: f"x{uuid.uuid4().hex[:6]}{s.strip('-.')}x"),
    st.integers(min_value=240, max_value=260).map(lambda n: (uuid.uuid4().hex + "a" * n)[:n]),  # at and beyond 253
    nasty,
)
huge_parameters = st.dictionaries(
    st.one_of(st.from_regex(r"\A[A-Z][A-Z0-9_]{0,30}\Z"), st.text(max_size=20)),
    st.one_of(st.text(max_size=50), st.integers(0, 5000).map(lambda n: "v" * n)),
    min_size=1,
    max_size=300,
)
bundles = st.one_of(
    st.sampled_from(["fail:task1of1-0s", "nonsense:zzz", "succeed:99tasks-0s"]).map(missing),
    st.just("fail:task1of1-0s").map(played),
    nasty,
)
GOOD_BUNDLE = "succeed:1tasks-0s"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _ref(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"].setdefault("workflowRef", {"workflowId": "restart-deployment"})


RR_PARTS = {
    "name": lambda m, d: m["metadata"].__setitem__("name", d(names)),
    "target.kind": lambda m, d: m["spec"]["targetResource"].__setitem__("kind", d(nasty)),
    "target.name": lambda m, d: m["spec"]["targetResource"].__setitem__("name", d(nasty)),
    "target.namespace": lambda m, d: m["spec"]["targetResource"].__setitem__("namespace", d(nasty)),
    "signalName": lambda m, d: m["spec"].__setitem__("signalName", d(nasty)),
    "signalFingerprint": lambda m, d: m["spec"].__setitem__("signalFingerprint", d(nasty)),
    "severity": lambda m, d: m["spec"].__setitem__("severity", d(st.sampled_from(["CRITICAL", "", "fatal"]))),
    "workflowId": lambda m, d: _ref(m).__setitem__("workflowId", d(nasty)),
    "containerImage": lambda m, d: _ref(m).__setitem__("containerImage", d(bundles)),
    "parameters": lambda m, d: _ref(m).__setitem__("parameters", d(huge_parameters)),
    "no workflowRef": lambda m, d: m["spec"].pop("workflowRef", None),
    "timeouts": lambda m, d: m["spec"].__setitem__("timeoutConfig", {"global": d(nasty), "executing": d(nasty)}),
    "signalLabels": lambda m, d: m["spec"].__setitem__("signalLabels", d(huge_parameters)),
}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    manifest = rr_manifest(
        _unique("rr"),
        "",
        target={"kind": "Deployment", "name": _unique("app"), "namespace": "somewhere"},
        fp=fingerprint(uuid.uuid4().hex),
        bundle=played(GOOD_BUNDLE),
    )
    for part in draw(st.lists(st.sampled_from(sorted(RR_PARTS)), min_size=1, max_size=2, unique=True)):
        RR_PARTS[part](manifest, draw)
    return manifest


WFE_PARTS = {
    "name": lambda m, d: m["metadata"].__setitem__("name", d(names)),
    "targetResource": lambda m, d: m["spec"].__setitem__("targetResource", d(nasty)),
    "workflowId": lambda m, d: m["spec"]["workflowRef"].__setitem__("workflowId", d(nasty)),
    "containerImage": lambda m, d: m["spec"]["workflowRef"].__setitem__("containerImage", d(bundles)),
    "parameters": lambda m, d: m["spec"].__setitem__("parameters", d(huge_parameters)),
    "requestRef": lambda m, d: m["spec"].__setitem__(
        "remediationRequestRef", {"name": d(nasty), "namespace": d(nasty)}
    ),
    "executionConfig": lambda m, d: m["spec"].__setitem__("executionConfig", {"timeout": d(nasty)}),
}


@st.composite
def executions(draw: st.DrawFn) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {"name": _unique("we")},
        "spec": {
            "remediationRequestRef": {"name": "nobody", "namespace": "nowhere"},
            "workflowRef": {"workflowId": "wf", "version": "1", "containerImage": played(GOOD_BUNDLE)},
            "targetResource": f"somewhere/Deployment/{_unique('app')}",
        },
    }
    for part in draw(st.lists(st.sampled_from(sorted(WFE_PARTS)), min_size=1, max_size=2, unique=True)):
        WFE_PARTS[part](manifest, draw)
    return manifest


WORKFLOW_PARTS = {
    "workflowId": lambda m, d: m["spec"].__setitem__("workflowId", d(nasty)),
    "version": lambda m, d: m["spec"].__setitem__("version", d(nasty)),
    "containerImage": lambda m, d: m["spec"].__setitem__("containerImage", d(bundles)),
    "parameters": lambda m, d: m["spec"].__setitem__("parameters", d(huge_parameters)),
    "priority": lambda m, d: m["spec"].__setitem__("priority", d(st.integers(-(2**70), 2**70))),
    "match": lambda m, d: m["spec"].__setitem__(
        "match",
        {
            "signalNames": d(st.lists(nasty, max_size=3)),
            "severities": d(st.lists(nasty, max_size=3)),
            "targetKinds": d(st.lists(nasty, max_size=3)),
            "labels": d(st.dictionaries(nasty, nasty, max_size=3)),
        },
    ),
}


@st.composite
def catalog_entries(draw: st.DrawFn) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationWorkflow",
        "metadata": {"name": _unique("bad"), "labels": {LABEL: "true"}},
        "spec": {"workflowId": "bad-workflow", "version": "1", "containerImage": played(GOOD_BUNDLE)},
    }
    for part in draw(st.lists(st.sampled_from(sorted(WORKFLOW_PARTS)), min_size=1, max_size=2, unique=True)):
        WORKFLOW_PARTS[part](manifest, draw)
    return manifest


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


async def create(kube: AsyncClient, resource: Any, manifest: dict[str, Any], namespace: str | None) -> Any:
    body = copy.deepcopy(manifest)
    if namespace is not None:
        body["metadata"]["namespace"] = namespace
    return await kube.create(resource(body))


async def try_create(kube: AsyncClient, garbage: Garbage, kind: str, resource: Any, manifest: dict[str, Any]) -> None:
    namespace = garbage.at_start if kind != "workflow" else None
    try:
        await create(kube, resource, manifest, namespace)
    except ApiError as exc:
        garbage.refuse(exc)
        return
    garbage.accepted[kind].append(manifest)


# -- the tests ----------------------------------------------------------------------------------------


@FUZZ
@given(manifest=requests())
async def test_generated_requests_are_refused_or_accepted(
    kube: AsyncClient, garbage: Garbage, manifest: dict[str, Any]
) -> None:
    await try_create(kube, garbage, "rr", RemediationRequestResource, manifest)


@FUZZ
@given(manifest=executions())
async def test_generated_executions_are_refused_or_accepted(
    kube: AsyncClient, garbage: Garbage, manifest: dict[str, Any]
) -> None:
    await try_create(kube, garbage, "wfe", WorkflowExecutionResource, manifest)


@settings(FUZZ, max_examples=max(10, EXAMPLES // 2))
@given(manifest=catalog_entries())
async def test_generated_catalog_entries_are_refused_or_accepted(
    kube: AsyncClient, garbage: Garbage, manifest: dict[str, Any]
) -> None:
    await try_create(kube, garbage, "workflow", RemediationWorkflowResource, manifest)


@deadline()
async def test_whatever_was_accepted_ends_clearly_and_holds_up_nothing(
    kube: AsyncClient, kubeconfig: Path, garbage: Garbage
) -> None:
    assert garbage.accepted["rr"], "the generators must get some requests past the API server"
    namespaces = (garbage.at_start, garbage.live)
    settings = settings_for(garbage.exec_ns, execution={"cooldown": "1s"}, routing={"recentlyRemediatedCooldown": "0s"})
    before = sum(reconcile_total(ns) for ns in namespaces)
    async with (
        running(
            kubeconfig, settings, ("orchestrator", "executor"), namespaces=(*namespaces, garbage.exec_ns)
        ) as manager,
    ):
        with counting(manager) as passes:
            # The same garbage once more, now arriving on the watch of running controllers (as other
            # signals: a duplicate's original is looked up in its own namespace).
            for manifest in garbage.accepted["rr"]:
                again = copy.deepcopy(manifest)
                again["spec"]["signalFingerprint"] = fingerprint(uuid.uuid4().hex)
                await create(kube, RemediationRequestResource, again, garbage.live)
            for manifest in garbage.accepted["wfe"]:
                await create(kube, WorkflowExecutionResource, manifest, garbage.live)
            # Then valid requests: one naming its workflow, one picking it from the (garbage-laden) catalog.
            await create(kube, RemediationWorkflowResource, good_entry(), None)
            ns = garbage.live
            target = {"kind": "Deployment", "name": "after-the-garbage", "namespace": ns}
            await create(kube, RemediationRequestResource, rr_manifest("good-explicit", ns, target=target), ns)
            from_catalog = rr_manifest(
                "good-catalog",
                ns,
                target={"kind": "Deployment", "name": "from-the-catalog", "namespace": ns},
                bundle=None,
                signal_name="GoodSignal",
            )
            await create(kube, RemediationRequestResource, from_catalog, ns)

            async def settled() -> dict[str, Any] | None:
                state: dict[str, Any] = {"rrs": {}, "wfes": {}}
                for namespace in namespaces:
                    async for o in kube.list(RemediationRequestResource, namespace=namespace):
                        state["rrs"][f"{namespace}/{o.metadata.name}"] = o.to_dict()
                    async for o in kube.list(WorkflowExecutionResource, namespace=namespace):
                        state["wfes"][f"{namespace}/{o.metadata.name}"] = o.to_dict()
                open_rrs = [
                    k for k, b in state["rrs"].items() if _phase(b, "overallPhase") not in (*TERMINAL, "Blocked")
                ]
                open_wfes = [k for k, b in state["wfes"].items() if _phase(b, "phase") not in ("Completed", "Failed")]
                return state if not open_rrs and not open_wfes else None

            state = await eventually(settled, timeout=120, interval=0.5, what="every accepted object in a clear phase")
    rrs, wfes = state["rrs"], state["wfes"]
    assert _phase(rrs[f"{ns}/good-explicit"], "overallPhase") == "Completed"
    assert _phase(rrs[f"{ns}/good-catalog"], "overallPhase") == "Completed"
    assert rrs[f"{ns}/good-catalog"]["status"]["selectedWorkflow"]["workflowId"] == "good-workflow"
    for key, body in rrs.items():
        status = body["status"]
        if status["overallPhase"] == "Failed":
            assert status.get("failureReason") or status.get("message"), f"{key} failed without saying why"
        if status["overallPhase"] == "Blocked":  # only a block that still holds
            assert status.get("blockMessage"), key
            until = status.get("blockedUntil")
            assert until, f"{key}: {status['blockReason']} without an end, nothing left to wait for"
            assert until > datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), f"{key}: expired block {until}"
    for key, body in wfes.items():
        status = body["status"]
        if status["phase"] == "Failed":
            assert status["failureDetails"]["message"], f"{key} failed without saying why"

    # No crash, no hot loop: a handful of passes per object, and the orchestrator's own count agrees.
    assert passes.crashes() == []
    busiest_rr = passes.busiest("orchestrator", set(rrs))
    busiest_wfe = passes.busiest("executor", set(wfes))
    assert busiest_rr[1] <= 40, busiest_rr
    assert busiest_wfe[1] <= 40, busiest_wfe
    reconciles = sum(reconcile_total(namespace) for namespace in namespaces) - before
    assert reconciles <= 25 * len(rrs), (reconciles, len(rrs))
    failing = {key: n for key, n in passes.failures.items() if n > 3}
    assert failing == {}, failing
    print(
        "bad input:",
        {
            "accepted": {kind: len(found) for kind, found in garbage.accepted.items()},
            "refused": garbage.refused,
            "requests_by_phase": _count(_phase(b, "overallPhase") for b in rrs.values()),
            "executions_by_phase": _count(_phase(b, "phase") for b in wfes.values()),
            "reconciles": reconciles,
            "busiest": [busiest_rr, busiest_wfe],
            "warnings": len(passes.warnings()),
        },
    )


def good_entry() -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationWorkflow",
        # Generated entries without match rules fit every request: this one must win on priority (the
        # highest the API server takes) and, on a tie, on its name.
        "metadata": {"name": "aa-good-entry", "labels": {LABEL: "true"}},
        "spec": {
            "workflowId": "good-workflow",
            "version": "1.0.0",
            "containerImage": played(GOOD_BUNDLE),
            "match": {"signalNames": ["GoodSignal"]},
            "priority": 2**63 - 1,
        },
    }


def _phase(body: dict[str, Any], key: str) -> Any:
    return (body.get("status") or {}).get(key)


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
