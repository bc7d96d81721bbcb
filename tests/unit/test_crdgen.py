"""The committed CRDs are exactly what the models generate."""

from pathlib import Path

from kubernaut.api.crdgen import build_crd, render_crd_files
from kubernaut.api.v1alpha1 import RemediationWorkflow, WorkflowExecution
from kubernaut.paths import project_dir


def test_committed_crds_match_models() -> None:
    base = project_dir() / "config" / "crd" / "bases"
    rendered = render_crd_files()
    assert sorted(rendered) == sorted(p.name for p in base.glob("*.yaml"))
    for name, text in rendered.items():
        assert (base / name).read_text() == text, f"{name} drifted: run `make crds`"


def _no_refs(node: object) -> bool:
    if isinstance(node, dict):
        return all(k not in ("$ref", "anyOf", "title") and _no_refs(v) for k, v in node.items())
    if isinstance(node, list):
        return all(_no_refs(v) for v in node)
    return True


def test_schema_is_structural_and_described() -> None:
    crd = build_crd(WorkflowExecution)
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    assert _no_refs(schema)
    status = schema["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Running", "Completed", "Failed"]
    reason = status["failureDetails"]["properties"]["reason"]
    assert "ExecutionRaceCondition" in reason["enum"]
    assert set(status["failureDetails"]["required"]) >= {
        "failedTaskIndex",
        "failedTaskName",
        "reason",
        "message",
        "failedAt",
        "executionTimeBeforeFailure",
        "naturalLanguageSummary",
    }
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "WorkflowID",
        "Target",
        "Engine",
        "Duration",
        "Age",
    ]
    assert crd["spec"]["names"]["shortNames"] == ["wfe"]


def test_catalog_is_cluster_scoped() -> None:
    assert build_crd(RemediationWorkflow)["spec"]["scope"] == "Cluster"


def test_paths_exist() -> None:
    assert Path(project_dir() / "config" / "tekton" / "crds.yaml").is_file()
