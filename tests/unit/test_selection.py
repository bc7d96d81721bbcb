"""Workflow selection: explicit references, catalog matching, priorities and refusals."""

from typing import Any

import pytest

from kubernaut.api.v1alpha1 import RemediationRequest, RemediationWorkflow
from kubernaut.api.v1alpha1.common import ExecutionEngine
from kubernaut.domain.selection import SelectedWorkflow, SelectionFailure, select_workflow


def make_entry(
    name: str,
    workflow_id: str = "restart-pod",
    *,
    version: str = "1.0.0",
    image: str = "reg/restart:1",
    digest: str | None = None,
    parameters: dict[str, str] | None = None,
    match: dict[str, Any] | None = None,
    priority: int = 0,
) -> RemediationWorkflow:
    return RemediationWorkflow.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "workflowId": workflow_id,
                "version": version,
                "containerImage": image,
                "containerDigest": digest,
                "parameters": parameters,
                "match": match,
                "priority": priority,
            },
        }
    )


def make_rr(
    *,
    signal: str = "HighMemory",
    severity: str = "critical",
    kind: str = "Deployment",
    labels: dict[str, str] | None = None,
    ref: dict[str, Any] | None = None,
) -> RemediationRequest:
    return RemediationRequest.model_validate(
        {
            "metadata": {"name": "rr-1", "namespace": "prod"},
            "spec": {
                "signalFingerprint": "a" * 64,
                "signalName": signal,
                "severity": severity,
                "targetResource": {"kind": kind, "name": "api", "namespace": "prod"},
                "signalLabels": labels,
                "workflowRef": ref,
            },
        }
    )


def chosen(result: SelectedWorkflow | SelectionFailure) -> SelectedWorkflow:
    assert isinstance(result, SelectedWorkflow), result
    return result


def failure(result: SelectedWorkflow | SelectionFailure) -> str:
    assert isinstance(result, SelectionFailure), result
    return result.message


# --- catalog matching ----------------------------------------------------------------------------


def test_matching_entry_is_selected_with_its_defaults() -> None:
    entry = make_entry(
        "restart-v1",
        digest="sha256:abc",
        parameters={"GRACE_SECONDS": "30"},
        match={"signalNames": ["HighMemory"], "severities": ["critical"], "targetKinds": ["Deployment"]},
    )
    assert select_workflow(make_rr(), [entry]) == SelectedWorkflow(
        workflow_id="restart-pod",
        version="1.0.0",
        container_image="reg/restart:1",
        container_digest="sha256:abc",
        parameters={"GRACE_SECONDS": "30"},
        source="catalog:restart-v1",
    )


@pytest.mark.parametrize(
    ("match", "matches"),
    [
        (None, True),
        ({}, True),
        ({"signalNames": [], "severities": [], "targetKinds": [], "labels": {}}, True),
        ({"signalNames": ["HighMemory", "OOM"]}, True),
        ({"signalNames": ["OOM"]}, False),
        ({"severities": ["warning", "critical"]}, True),
        ({"severities": ["warning"]}, False),
        ({"targetKinds": ["Deployment"]}, True),
        ({"targetKinds": ["deployment"]}, False),
        ({"targetKinds": ["StatefulSet"]}, False),
        ({"labels": {"team": "payments"}}, True),
        ({"labels": {"team": "payments", "env": "prod"}}, True),
        ({"labels": {"team": "search"}}, False),
        ({"labels": {"tier": "db"}}, False),
        ({"signalNames": ["HighMemory"], "severities": ["warning"]}, False),
    ],
)
def test_every_given_criterion_must_hold(match: dict[str, Any] | None, matches: bool) -> None:
    rr = make_rr(labels={"team": "payments", "env": "prod"})
    result = select_workflow(rr, [make_entry("wf", match=match)])
    assert isinstance(result, SelectedWorkflow) is matches


def test_labels_criterion_fails_when_the_signal_has_no_labels() -> None:
    assert isinstance(select_workflow(make_rr(), [make_entry("wf", match={"labels": {"team": "x"}})]), SelectionFailure)


def test_highest_priority_wins_then_name() -> None:
    catalog = [
        make_entry("b-low", "wf-low", priority=1),
        make_entry("z-high", "wf-z", priority=5),
        make_entry("a-high", "wf-a", priority=5),
        make_entry("c-no-match", "wf-c", priority=99, match={"signalNames": ["Other"]}),
    ]
    assert chosen(select_workflow(make_rr(), catalog)).source == "catalog:a-high"
    assert chosen(select_workflow(make_rr(), list(reversed(catalog)))).workflow_id == "wf-a"


def test_no_match_names_the_signal() -> None:
    catalog = [make_entry("wf", match={"signalNames": ["Other"]})]
    message = failure(select_workflow(make_rr(severity="warning", kind="Node"), catalog))
    assert message == "no workflow in the catalog matches signal 'HighMemory' (severity warning, target kind Node)"
    assert failure(select_workflow(make_rr(), [])).startswith("no workflow in the catalog matches")


# --- explicit workflowRef ------------------------------------------------------------------------


def test_workflow_ref_takes_the_catalog_entry_and_overrides_parameters() -> None:
    catalog = [
        make_entry("restart", "restart-pod", parameters={"GRACE_SECONDS": "30", "MODE": "soft"}, priority=1),
        make_entry("scale", "scale-up", priority=100),
    ]
    rr = make_rr(ref={"workflowId": "restart-pod", "parameters": {"MODE": "hard", "EXTRA": "1"}})
    assert select_workflow(rr, catalog) == SelectedWorkflow(
        workflow_id="restart-pod",
        version="1.0.0",
        container_image="reg/restart:1",
        container_digest=None,
        parameters={"GRACE_SECONDS": "30", "MODE": "hard", "EXTRA": "1"},
        source="spec.workflowRef",
    )


def test_workflow_ref_bypasses_match_criteria() -> None:
    entry = make_entry("restart", match={"signalNames": ["Other"]})
    assert chosen(select_workflow(make_rr(ref={"workflowId": "restart-pod"}), [entry])).workflow_id == "restart-pod"


def test_workflow_ref_version_picks_that_version() -> None:
    catalog = [
        make_entry("restart-v1", version="1.0.0", image="reg/restart:1", priority=9),
        make_entry("restart-v2", version="2.0.0", image="reg/restart:2"),
    ]
    picked = chosen(select_workflow(make_rr(ref={"workflowId": "restart-pod", "version": "2.0.0"}), catalog))
    assert (picked.version, picked.container_image) == ("2.0.0", "reg/restart:2")
    # Without a version: highest priority, then name.
    assert chosen(select_workflow(make_rr(ref={"workflowId": "restart-pod"}), catalog)).version == "1.0.0"


def test_workflow_ref_image_overrides_the_catalog_bundle_and_its_digest() -> None:
    entry = make_entry("restart", image="reg/restart:1", digest="sha256:abc")
    picked = chosen(
        select_workflow(make_rr(ref={"workflowId": "restart-pod", "containerImage": "reg/mine:7"}), [entry])
    )
    assert (picked.container_image, picked.container_digest) == ("reg/mine:7", None)
    same = chosen(
        select_workflow(make_rr(ref={"workflowId": "restart-pod", "containerImage": "reg/restart:1"}), [entry])
    )
    assert same.container_digest == "sha256:abc"


def test_workflow_ref_outside_the_catalog_runs_when_complete() -> None:
    ref = {"workflowId": "adhoc", "version": "0.1.0", "containerImage": "reg/adhoc:0", "parameters": {"A": "1"}}
    assert select_workflow(make_rr(ref=ref), [make_entry("restart")]) == SelectedWorkflow(
        workflow_id="adhoc",
        version="0.1.0",
        container_image="reg/adhoc:0",
        container_digest=None,
        parameters={"A": "1"},
        source="spec.workflowRef",
    )


@pytest.mark.parametrize(
    "ref",
    [
        {"workflowId": "adhoc"},
        {"workflowId": "adhoc", "version": "0.1.0"},
        {"workflowId": "adhoc", "containerImage": "reg/adhoc:0"},
        {"workflowId": "restart-pod", "version": "9.9.9"},
    ],
)
def test_workflow_ref_outside_the_catalog_without_version_and_image_fails(ref: dict[str, Any]) -> None:
    assert f"workflow '{ref['workflowId']}' is not in the catalog" in failure(
        select_workflow(make_rr(ref=ref), [make_entry("restart")])
    )


# --- refusals ------------------------------------------------------------------------------------


def test_entry_without_a_bundle_is_refused() -> None:
    message = failure(select_workflow(make_rr(), [make_entry("restart", image="")]))
    assert "'restart-pod'" in message
    assert "no bundle" in message


@pytest.mark.parametrize("key", ["grace", "Grace", "1GRACE", "_GRACE", "GRACE-SECONDS", "GRACE SECONDS", ""])
def test_parameter_names_must_be_upper_snake_case(key: str) -> None:
    message = failure(select_workflow(make_rr(), [make_entry("restart", parameters={key: "1"})]))
    assert f"parameter '{key}'" in message
    message = failure(
        select_workflow(make_rr(ref={"workflowId": "restart-pod", "parameters": {key: "1"}}), [make_entry("r")])
    )
    assert f"parameter '{key}'" in message


@pytest.mark.parametrize("key", ["A", "GRACE_SECONDS", "X1", "A_B_2_"])
def test_upper_snake_case_parameters_pass(key: str) -> None:
    assert chosen(select_workflow(make_rr(), [make_entry("restart", parameters={key: "1"})])).parameters == {key: "1"}


def test_selection_converts_to_the_status_form() -> None:
    picked = chosen(select_workflow(make_rr(), [make_entry("restart", parameters={"A": "1"})]))
    assert picked.to_status().to_wire() == {
        "workflowId": "restart-pod",
        "version": "1.0.0",
        "containerImage": "reg/restart:1",
        "parameters": {"A": "1"},
        "source": "catalog:restart",
    }


# --- engines -------------------------------------------------------------------------------------


def test_a_job_entry_selects_its_engine_command_and_deadline() -> None:
    entry = RemediationWorkflow.model_validate(
        {
            "metadata": {"name": "restart-job"},
            "spec": {
                "workflowId": "restart-pod",
                "version": "1.0.0",
                "containerImage": "reg/restart-job:1",
                "execution": {"engine": "job", "command": ["/restart", "--all"], "activeDeadline": "10m"},
            },
        }
    )
    selected = chosen(select_workflow(make_rr(), [entry]))
    assert (selected.engine, selected.command, selected.active_deadline) == (
        ExecutionEngine.JOB,
        ("/restart", "--all"),
        "10m",
    )


def test_an_entry_without_execution_runs_on_tekton() -> None:
    selected = chosen(select_workflow(make_rr(), [make_entry("restart")]))
    assert (selected.engine, selected.command, selected.active_deadline) == (ExecutionEngine.TEKTON, (), None)
