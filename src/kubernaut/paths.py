"""Where the project's manifests live (CRDs, Tekton CRDs, samples)."""

import os
from pathlib import Path


def project_dir() -> Path:
    """The checkout holding `config/`; `KUBERNAUT_PROJECT_DIR` overrides."""
    override = os.environ.get("KUBERNAUT_PROJECT_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2]


def crd_paths() -> list[Path]:
    return [project_dir() / "config" / "crd" / "bases", project_dir() / "config" / "tekton" / "crds.yaml"]


def samples_dir() -> Path:
    return project_dir() / "config" / "samples"
