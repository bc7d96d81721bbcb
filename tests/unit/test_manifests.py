"""The shipped deployment manifests: they render, and they keep the least-privilege and hardening rules."""

import re
import shutil
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml

from kubernaut.paths import project_dir

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
EXECUTION_NAMESPACE = "kubernaut-workflows"
SYSTEM_NAMESPACE = "kubernaut-system"


@cache
def rendered() -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render config/default (install it, see README)"
    result = subprocess.run(
        [kubectl, "kustomize", str(project_dir() / "config" / "default")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered() if doc["kind"] in kinds]


def rules() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(doc, rule) for doc in of_kind("Role", "ClusterRole") for rule in doc.get("rules", [])]


def test_everything_renders_with_the_expected_kinds() -> None:
    kinds = {doc["kind"] for doc in rendered()}
    assert {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    } <= kinds
    crds = {doc["metadata"]["name"] for doc in of_kind("CustomResourceDefinition")}
    assert crds == {
        "remediationrequests.kubernaut.ai",
        "workflowexecutions.kubernaut.ai",
        "notificationrequests.kubernaut.ai",
        "remediationworkflows.kubernaut.ai",
        "remediationapprovalrequests.kubernaut.ai",
    }
    accounts = {(doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in of_kind("ServiceAccount")}
    assert (EXECUTION_NAMESPACE, "kubernaut-workflow-runner") in accounts
    for component in ("orchestrator", "executor", "notifier", "gateway"):
        assert (SYSTEM_NAMESPACE, f"kubernaut-{component}") in accounts


def test_no_wildcard_in_any_rule() -> None:
    for doc, rule in rules():
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(key, []), f"{doc['kind']} {doc['metadata']['name']}: '*' in {key}"


@pytest.mark.parametrize(("group", "resource"), [("tekton.dev", "pipelineruns"), ("batch", "jobs")])
def test_run_writes_only_in_a_role_of_the_execution_namespace(group: str, resource: str) -> None:
    writers = [
        (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        for doc, rule in rules()
        if group in rule.get("apiGroups", [])
        and {resource, f"{resource}/status"} & set(rule.get("resources", []))
        and WRITE_VERBS & set(rule.get("verbs", []))
    ]
    # the orchestrator's create is held to server-side dry runs by its admission policy
    assert sorted(writers) == [
        ("Role", EXECUTION_NAMESPACE, "kubernaut-executor"),
        ("Role", EXECUTION_NAMESPACE, "kubernaut-orchestrator"),
    ]
    policy = next(d for d in rendered() if d["kind"] == "ValidatingAdmissionPolicy")
    assert policy["spec"]["validations"] == [
        {
            "expression": "request.dryRun == true",
            "message": "kubernaut-orchestrator may create PipelineRuns and Jobs only as server-side dry runs",
        }
    ]
    assert resource in {r for rule in policy["spec"]["matchConstraints"]["resourceRules"] for r in rule["resources"]}


@pytest.mark.parametrize(("group", "resource"), [("tekton.dev", "pipelineruns"), ("batch", "jobs")])
def test_runs_are_listed_and_watched_only_in_the_execution_namespace(group: str, resource: str) -> None:
    readers = {
        (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        for doc, rule in rules()
        if group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and {"list", "watch"} & set(rule.get("verbs", []))
    }
    assert readers == {
        ("Role", EXECUTION_NAMESPACE, "kubernaut-executor"),
        ("Role", EXECUTION_NAMESPACE, "kubernaut-orchestrator"),
    }


def test_secrets_are_readable_only_by_name_and_never_listed() -> None:
    for doc, rule in rules():
        if "secrets" in rule.get("resources", []):
            assert doc["kind"] == "Role", doc["metadata"]["name"]
            assert rule["verbs"] == ["get"]
            assert rule.get("resourceNames"), f"{doc['metadata']['name']} reads Secrets without naming them"


def test_leases_only_in_the_system_namespace_and_updates_by_name() -> None:
    for doc, rule in rules():
        if "leases" in rule.get("resources", []):
            assert (doc["kind"], doc["metadata"].get("namespace")) == ("Role", SYSTEM_NAMESPACE)
            if {"get", "update"} & set(rule["verbs"]):
                assert rule.get("resourceNames")


def test_no_role_reaches_beyond_what_kubernaut_touches() -> None:
    groups = {group for _, rule in rules() for group in rule.get("apiGroups", [])}
    assert groups <= {"kubernaut.ai", "tekton.dev", "batch", "coordination.k8s.io", ""}
    core = {resource for _, rule in rules() if "" in rule["apiGroups"] for resource in rule["resources"]}
    assert core <= {"events", "secrets", "pods", "namespaces", "nodes", "configmaps"}


def test_namespaces_nodes_and_configmaps_are_only_read_but_the_breaker() -> None:
    # the opt-in labels and the breaker's reset are read; people patch only the breaker's ConfigMap
    for doc, rule in rules():
        touched = {"namespaces", "nodes", "configmaps"} & set(rule.get("resources", []))
        if not touched or "" not in rule["apiGroups"]:
            continue
        if set(rule["verbs"]) <= {"list", "watch"}:
            assert "configmaps" not in touched or doc["kind"] == "Role"
            continue
        assert (doc["metadata"]["name"], rule.get("resourceNames")) == (
            "kubernaut-breaker-resetter",
            ["kubernaut-breaker"],
        )
        assert set(rule["verbs"]) == {"get", "patch"}


def test_pods_are_only_read_and_only_in_the_execution_namespace() -> None:
    for doc, rule in rules():
        if "pods" in rule.get("resources", []):
            assert (doc["kind"], doc["metadata"].get("namespace")) == ("Role", EXECUTION_NAMESPACE)
            assert set(rule["verbs"]) <= {"get", "list", "watch"}


def deployments() -> list[dict[str, Any]]:
    found = of_kind("Deployment")
    assert {d["metadata"]["name"] for d in found} == {
        "kubernaut-orchestrator",
        "kubernaut-executor",
        "kubernaut-notifier",
        "kubernaut-gateway",
    }
    return found


@pytest.mark.parametrize("name", ["orchestrator", "executor", "notifier", "gateway"])
def test_deployment_is_hardened(name: str) -> None:
    [deployment] = [d for d in deployments() if d["metadata"]["name"] == f"kubernaut-{name}"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"kubernaut-{name}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    image = container["image"]
    assert re.match(r"^[^:@]+(:[\w][\w.-]*)?(@sha256:[0-9a-f]{64})?$", image)
    assert not image.endswith(":latest")
    assert ":" in image.rsplit("/", 1)[-1] or "@" in image
    assert pod["terminationGracePeriodSeconds"] > 25  # the process stops itself within 25s first
    if name != "gateway":
        assert "--leader-elect" in container["args"]


def test_webhooks_only_see_kubernaut_kinds_and_spare_the_controllers() -> None:
    hooks = [
        hook
        for doc in of_kind("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for hook in doc["webhooks"]
    ]
    assert {hook["name"] for hook in hooks} == {
        "clearance.workflowexecutions.kubernaut.ai",
        "clearance-identity.workflowexecutions.kubernaut.ai",
        "decision.remediationapprovalrequests.kubernaut.ai",
        "decision-identity.remediationapprovalrequests.kubernaut.ai",
        "breaker-reset.configmaps.kubernaut.ai",
        "breaker-reset-identity.configmaps.kubernaut.ai",
        "validation.kubernaut.ai",
    }
    for hook in hooks:
        assert hook["sideEffects"] == "None"
        assert hook["clientConfig"]["service"]["name"] == "kubernaut-webhook"
        conditions = " ".join(c["expression"] for c in hook["matchConditions"])
        for rule in hook["rules"]:
            if rule["apiGroups"] == [""]:  # the one ConfigMap of the breaker, in the operator's namespace
                assert rule["resources"] == ["configmaps"]
                assert "'kubernaut-breaker'" in conditions
                assert "request.namespace == 'kubernaut-system'" in conditions
                continue
            assert rule["apiGroups"] == ["kubernaut.ai"]
            assert "*" not in rule["resources"]
            assert not any("/" in r for r in rule["resources"])
        assert "system:serviceaccount:kubernaut-system:" in conditions
        expected = "Ignore" if hook["name"] == "validation.kubernaut.ai" else "Fail"
        assert hook["failurePolicy"] == expected


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    text = (project_dir() / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(bases) >= 2
    for base in bases:
        assert re.match(r"^python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?$", base), base
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0", "0:0")
