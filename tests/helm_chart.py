"""The Helm chart under test (charts/kubernaut) and what it is compared with (config/, kustomize)."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from kubernaut.devcluster.helm import ensure_helm
from kubernaut.paths import project_dir

CHART = project_dir() / "charts" / "kubernaut"
PRODUCTION_VALUES = CHART / "values-production.yaml"
RELEASE = "kubernaut"
NAMESPACE = "kubernaut-system"

Resource = dict[str, Any]


def helm(*args: str | Path, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm (built into the tool cache on first use)."""
    argv = [str(ensure_helm()), *map(str, args)]
    if kubeconfig is not None:
        argv.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def template_args(*values: Path, sets: tuple[str, ...] = ()) -> list[str | Path]:
    args: list[str | Path] = ["template", RELEASE, CHART, f"--namespace={NAMESPACE}"]
    for path in values:
        args += ["--values", path]
    for assignment in sets:
        args += ["--set", assignment]
    return args


def render_chart(*values: Path, sets: tuple[str, ...] = ()) -> list[Resource]:
    """`helm template` of the chart, as parsed documents."""
    return [doc for doc in yaml.safe_load_all(helm(*template_args(*values, sets=sets)).stdout) if doc]


def kustomize(directory: str) -> list[Resource]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the kustomize configuration"
    out = subprocess.run(
        [kubectl, "kustomize", str(project_dir() / "config" / directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def key(doc: Resource) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def by_key(docs: list[Resource]) -> dict[tuple[str, str, str], Resource]:
    return {key(doc): doc for doc in docs}


def operator_config(docs: list[Resource]) -> dict[str, Any]:
    """The operator's config file as the chart renders it into the ConfigMap."""
    config_map = by_key(docs)[("ConfigMap", NAMESPACE, "kubernaut-config")]
    return dict(yaml.safe_load(config_map["data"]["kubernaut.yaml"]))
