"""The PipelineRun rendered for a WorkflowExecution, and how a PipelineRun names its owner."""

import re
from typing import Any

import pytest

from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution
from kubernaut.domain.pipelinerun import build_label_value, build_pipelinerun, is_owned_by, parse_owner

# What the API server accepts as a label value.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def make_wfe(
    name: str = "wfe-a",
    namespace: str = "default",
    target: str = "default/deployment/test-app",
    *,
    workflow_id: str = "restart-pod",
    parameters: dict[str, str] | None = None,
    execution_config: dict[str, str] | None = None,
) -> WorkflowExecution:
    spec: dict[str, Any] = {
        "remediationRequestRef": {"kind": "RemediationRequest", "name": "rr-1", "namespace": namespace},
        "workflowRef": {"workflowId": workflow_id, "version": "1.0.0", "containerImage": "quay.io/wf/restart:1"},
        "targetResource": target,
    }
    if parameters is not None:
        spec["parameters"] = parameters
    if execution_config is not None:
        spec["executionConfig"] = execution_config
    return WorkflowExecution.from_wire({"metadata": {"name": name, "namespace": namespace, "uid": "u-1"}, "spec": spec})


def render(wfe: WorkflowExecution) -> dict[str, Any]:
    return build_pipelinerun(wfe, namespace="kubernaut-workflows", service_account="kubernaut-workflow-runner")


def test_name_namespace_and_kind() -> None:
    pr = render(make_wfe())
    assert pr["apiVersion"] == "tekton.dev/v1"
    assert pr["kind"] == "PipelineRun"
    assert pr["metadata"]["name"] == "wfe-196200272a2c85fd"
    assert pr["metadata"]["namespace"] == "kubernaut-workflows"  # not the WFE's, not the target's
    assert "ownerReferences" not in pr["metadata"]


def test_labels_and_annotation() -> None:
    pr = render(make_wfe())
    assert pr["metadata"]["labels"] == {
        "kubernaut.ai/workflow-execution": "wfe-a",
        "kubernaut.ai/workflow-id": "restart-pod",
        "kubernaut.ai/target-resource": "default__deployment__test-app",
        "kubernaut.ai/source-namespace": "default",
    }
    assert pr["metadata"]["annotations"] == {"kubernaut.ai/target-resource": "default/deployment/test-app"}


def test_long_target_label_is_truncated_but_annotation_and_param_keep_it_whole() -> None:
    target = "payment/Deployment/" + "a" * 200
    pr = render(make_wfe(target=target))
    label = pr["metadata"]["labels"]["kubernaut.ai/target-resource"]
    assert label == ("payment__Deployment__" + "a" * 200)[:63]
    assert pr["metadata"]["annotations"]["kubernaut.ai/target-resource"] == target
    assert pr["spec"]["params"][-1] == {"name": "TARGET_RESOURCE", "value": target}


def test_params_sorted_then_target_last() -> None:
    pr = render(make_wfe(parameters={"REPLICA_COUNT": "3", "NAMESPACE": "production"}))
    assert pr["spec"]["params"] == [
        {"name": "NAMESPACE", "value": "production"},
        {"name": "REPLICA_COUNT", "value": "3"},
        {"name": "TARGET_RESOURCE", "value": "default/deployment/test-app"},
    ]


@pytest.mark.parametrize("parameters", [None, {}])
def test_no_parameters_only_target(parameters: dict[str, str] | None) -> None:
    assert render(make_wfe(parameters=parameters))["spec"]["params"] == [
        {"name": "TARGET_RESOURCE", "value": "default/deployment/test-app"}
    ]


def test_user_target_resource_is_kept_so_it_appears_twice() -> None:
    pr = render(make_wfe(parameters={"TARGET_RESOURCE": "other/Pod/x", "A": "1"}))
    assert pr["spec"]["params"] == [
        {"name": "A", "value": "1"},
        {"name": "TARGET_RESOURCE", "value": "other/Pod/x"},
        {"name": "TARGET_RESOURCE", "value": "default/deployment/test-app"},
    ]


def test_bundles_resolver() -> None:
    assert render(make_wfe())["spec"]["pipelineRef"] == {
        "resolver": "bundles",
        "params": [
            {"name": "bundle", "value": "quay.io/wf/restart:1"},
            {"name": "name", "value": "workflow"},
            {"name": "kind", "value": "pipeline"},
        ],
    }


def test_controller_service_account_and_no_timeouts() -> None:
    wfe = make_wfe(execution_config={"serviceAccountName": "custom-sa", "timeout": "20m"})
    spec = build_pipelinerun(wfe, namespace="ns", service_account="runner")["spec"]
    assert spec["taskRunTemplate"] == {"serviceAccountName": "runner"}
    assert "timeouts" not in spec
    assert set(spec) == {"pipelineRef", "params", "taskRunTemplate"}


@pytest.mark.parametrize(
    ("workflow_id", "expected"),
    [
        ("restart-pod", "restart-pod"),
        ("a" * 70, "a" * 63),
        ("a" * 62 + "-b", "a" * 62),  # cut at 63, trailing separator dropped
        ("Restart Pod/v2", "Restart_Pod_v2"),  # characters a label cannot hold
        ("-scale.up_", "scale.up"),  # must start and end alphanumerically
        ("", ""),
    ],
)
def test_workflow_id_label_is_a_valid_label_value(workflow_id: str, expected: str) -> None:
    assert build_label_value(workflow_id) == expected
    label = render(make_wfe(workflow_id=workflow_id))["metadata"]["labels"]["kubernaut.ai/workflow-id"]
    assert label == expected
    assert len(label) <= 63
    assert LABEL_VALUE.match(label)


@pytest.mark.parametrize(
    ("labels", "owner"),
    [
        ({"kubernaut.ai/workflow-execution": "wfe-a", "kubernaut.ai/source-namespace": "team-1"}, ("team-1", "wfe-a")),
        ({"kubernaut.ai/workflow-execution": "wfe-a"}, ("", "wfe-a")),
        ({}, ("", "")),
        (None, ("", "")),
    ],
)
def test_parse_owner(labels: dict[str, str] | None, owner: tuple[str, str]) -> None:
    assert parse_owner({"metadata": {"name": "wfe-x", "labels": labels}}) == owner


def test_ownership_needs_name_and_namespace() -> None:
    ours = render(make_wfe("wfe-a", "team-1"))
    assert is_owned_by(ours, make_wfe("wfe-a", "team-1"))
    assert not is_owned_by(ours, make_wfe("wfe-a", "team-2"))  # same name, other namespace
    assert not is_owned_by(ours, make_wfe("wfe-b", "team-1"))
    assert not is_owned_by({"metadata": {}}, make_wfe("wfe-a", "team-1"))


def test_a_long_wfe_name_keeps_a_valid_label_and_maps_back() -> None:
    from kubernaut.api.v1alpha1 import WorkflowExecution
    from kubernaut.domain.pipelinerun import build_pipelinerun, is_owned_by, parse_owner

    name = "we-" + "a" * 120
    wfe = WorkflowExecution.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-1"},
            "spec": {
                "remediationRequestRef": {"name": "r"},
                "targetResource": "team-1/Deployment/api",
                "workflowRef": {"workflowId": "w", "version": "1", "containerImage": "b"},
            },
        }
    )
    manifest = build_pipelinerun(wfe, namespace="exec", service_account="sa")
    label = manifest["metadata"]["labels"]["kubernaut.ai/workflow-execution"]
    assert len(label) <= 63
    assert label[-1].isalnum()
    assert parse_owner(manifest) == ("team-1", name)
    assert is_owned_by(manifest, wfe)
