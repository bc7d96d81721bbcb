"""The Helm chart (charts/kubernaut) passes `helm lint`, rejects bad values with a message naming
them, renders a config file the operator accepts, and installs exactly what `config/default`
installs: the two ways of installing cannot drift apart."""

import base64
import copy
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from cryptography import x509

import kubernaut
from kubernaut.config import parse_settings
from tests.helm_chart import (
    CHART,
    NAMESPACE,
    PRODUCTION_VALUES,
    Resource,
    by_key,
    helm,
    key,
    kustomize,
    operator_config,
    render_chart,
    template_args,
)

# Labels and annotations only Helm sets: release bookkeeping, the config checksum that rolls pods,
# and the policy that keeps the CRDs on `helm uninstall`.
HELM_LABELS = {
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "helm.sh/chart",
}
HELM_ANNOTATIONS = {"checksum/config", "helm.sh/resource-policy"}


def _strip(meta: dict[str, Any]) -> None:
    for field, helm_only in (("labels", HELM_LABELS), ("annotations", HELM_ANNOTATIONS)):
        kept = {k: v for k, v in (meta.get(field) or {}).items() if k not in helm_only}
        if kept:
            meta[field] = kept
        else:
            meta.pop(field, None)


def normalized(doc: Resource) -> Resource:
    """The resource as the API server would compare it, without what only Helm adds."""
    doc = copy.deepcopy(doc)
    _strip(doc["metadata"])
    template = doc.get("spec", {}).get("template", {})
    if "metadata" in template:
        _strip(template["metadata"])
    if doc["kind"] == "ConfigMap" and "data" in doc:  # the config file is compared as data, not as text
        doc["data"] = {name: yaml.safe_load(text) for name, text in doc["data"].items()}
    return doc


@pytest.fixture(scope="module")
def default_render() -> list[Resource]:
    return render_chart()


def test_lint_passes_with_default_and_production_values() -> None:
    for values in ([], ["--values", str(PRODUCTION_VALUES)]):
        result = helm("lint", "--strict", CHART, f"--namespace={NAMESPACE}", *values)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (
            "image.pullPolicy=Sometimes",
            "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        ("controllers.executor.replicas=-1", "at '/controllers/executor/replicas': minimum: got -1, want 0"),
        (
            "audit.url=mysql://db/kubernaut",
            "at '/audit/url': 'mysql://db/kubernaut' does not match pattern '^(sqlite:///|postgresql://|postgres://|memory://)'",
        ),
        ("execution.cooldown=five minutes", "at '/execution/cooldown'"),
        ("limits.maxConcurrentExecutions=0", "at '/limits/maxConcurrentExecutions': minimum: got 0, want 1"),
        ("breaker.window=soon", "at '/breaker/window'"),
        ("scope.requireManagedLabels=false", "additional properties 'requireManagedLabels' not allowed"),
    ],
)
def test_a_bad_value_fails_template_and_lint_with_a_message_naming_it(assignment: str, message: str) -> None:
    for args in (template_args(sets=(assignment,)), ["lint", CHART, "--set", assignment]):
        result = helm(*args, check=False)
        assert result.returncode != 0, result.stdout
        assert message in result.stdout + result.stderr, result.stdout + result.stderr


def test_the_rendered_config_file_is_accepted_by_the_operator(default_render: list[Resource]) -> None:
    assert parse_settings(operator_config(default_render)).gateway.bearer_token_secret == (
        "kubernaut-system/kubernaut-gateway-token:token"
    )
    production = parse_settings(operator_config(render_chart(PRODUCTION_VALUES)))
    assert production.notifier.slack.webhook_url_secret == (
        "kubernaut-system/kubernaut-notification-channels:slack-url"
    )
    assert production.notifications.critical == ["slack"]  # from extraConfig
    assert production.audit.url.startswith("postgresql://kubernaut@audit-db.databases.svc")


def test_the_safety_gates_reach_the_operator() -> None:
    sets = ("dryRun=true", "limits.maxConcurrentExecutions=3", "scope.requireManagedLabel=false")
    settings = parse_settings(operator_config(render_chart(sets=sets)))
    assert settings.dry_run.enabled is True
    assert settings.gate_policy().max_concurrent_executions == 3
    assert settings.gate_policy().require_managed_label is False
    assert parse_settings(operator_config(render_chart())).gate_policy().require_managed_label is True


def test_default_values_install_what_config_default_installs(default_render: list[Resource]) -> None:
    # The operator's namespace is the release namespace: created before `helm install`, not by it.
    expected = {key(d): normalized(d) for d in kustomize("default") if key(d) != ("Namespace", "", NAMESPACE)}
    rendered = {key(d): normalized(d) for d in default_render}
    assert sorted(rendered) == sorted(expected)
    differing = [k for k in expected if rendered[k] != expected[k]]
    assert not differing, "\n\n".join(f"{k}:\nhelm:      {rendered[k]}\nkustomize: {expected[k]}" for k in differing)


def test_prometheus_objects_are_those_of_config_prometheus() -> None:
    docs = by_key(render_chart(sets=("metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")))
    (monitor,) = kustomize("prometheus")
    monitor["metadata"]["labels"]["app.kubernetes.io/part-of"] = "kubernaut"  # as config/default labels it
    assert normalized(docs[key(monitor)]) == normalized(monitor)
    rule = docs[("PrometheusRule", NAMESPACE, "kubernaut")]
    rules_file = CHART.parent.parent / "config" / "prometheus" / "rules.yaml"
    assert rule["spec"] == yaml.safe_load(rules_file.read_text())
    # Not templated by Helm: the alert texts keep their Prometheus placeholders.
    assert "{{ $labels.namespace }}" in yaml.safe_dump(rule["spec"])


def test_chart_app_version_is_the_operators_and_the_kustomize_image() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == kubernaut.__version__
    images = {c["image"] for d in kustomize("default") if d["kind"] == "Deployment" for c in _containers(d)}
    assert images == {f"ghcr.io/kubernaut/kubernaut-py:{kubernaut.__version__}"}


def _containers(doc: Resource) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def test_without_cert_manager_the_chart_issues_the_webhook_certificate() -> None:
    docs = render_chart(sets=("webhook.certManager.enabled=false",))
    found = by_key(docs)
    assert not [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]
    secret = found[("Secret", NAMESPACE, "kubernaut-webhook-cert")]
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "kubernaut-webhook.kubernaut-system.svc" in names
    assert cert.not_valid_after_utc > datetime.now(UTC)
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        configuration = found[(kind, "", "kubernaut-admission")]
        assert "annotations" not in configuration["metadata"]
        bundles = {w["clientConfig"]["caBundle"] for w in configuration["webhooks"]}
        assert bundles == {secret["data"]["ca.crt"]}


def test_a_disabled_controller_gets_no_deployment_account_or_rights() -> None:
    docs = render_chart(sets=("controllers.notifier.enabled=false", "controllers.gateway.enabled=false"))
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for component in ("notifier", "gateway"):
        assert not {n for n in names if component in n[1]}, f"{component} objects rendered"
    lease_role = by_key(docs)[("Role", NAMESPACE, "kubernaut-leader-election")]
    assert lease_role["rules"][0]["resourceNames"] == ["kubernaut-orchestrator", "kubernaut-executor"]
    assert ("Deployment", "kubernaut-executor") in names
