"""Where the project's manifests live (CRDs, Tekton CRDs, samples)."""

import os
from pathlib import Path


def project_dir() -> Path:
    """The checkout holding `config/`; `KUBERNAUT_PROJECT_DIR` overrides."""
    override = os.environ.get("KUBERNAUT_PROJECT_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2]


def crd_paths(tekton_crds: bool = True) -> list[Path]:
    """Our CRDs and, unless Tekton installs its own, the tekton.dev kinds as far as we use them."""
    ours = [project_dir() / "config" / "crd" / "bases"]
    return [*ours, project_dir() / "config" / "tekton" / "crds.yaml"] if tekton_crds else ours


def samples_dir() -> Path:
    return project_dir() / "config" / "samples"
