"""Find or build the helm CLI the chart is tested with.

Order: `KUBERNAUT_HELM` (a helm binary of the user's choice), then the cache
`~/.cache/kubernaut/helm/<version>/helm`, else a build from the pinned Go module in `tools/helm/`
with the machine's Go toolchain, the same way the control plane is built.
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kubernaut.devcluster.binaries import _go, cache_root, read_pin
from kubernaut.errors import ControlPlaneError

_MODULE_DIR = Path(__file__).resolve().parents[3] / "tools" / "helm"
_PACKAGE = "helm.sh/helm/v3/cmd/helm"


def _module_version(module: str) -> str:
    return read_pin(_MODULE_DIR / "go.mod", module)


def pinned_version() -> str:
    """The Helm release `tools/helm/go.mod` pins (the single source of truth)."""
    return _module_version("helm.sh/helm/v3")


def _ldflags(version: str) -> str:
    # As Helm's own Makefile: the version, and the Kubernetes version `helm template` and `helm
    # lint` assume (that of client-go, v0.34.x -> 1.34) instead of the compiled-in default 1.20.
    minor = _module_version("k8s.io/client-go").split(".")[1]
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for package in ("pkg/lint/rules", "pkg/chartutil"):
        flags += [f"-X helm.sh/helm/v3/{package}.k8sVersionMajor=1"]
        flags += [f"-X helm.sh/helm/v3/{package}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def cached_path() -> Path:
    # A sibling of the control-plane cache: ~/.cache/kubernaut/helm/<version>/helm.
    return cache_root().parent / "helm" / pinned_version() / "helm"


def find_helm() -> Path | None:
    """A helm binary ready to use without building, or None."""
    chosen = os.environ.get("KUBERNAUT_HELM")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise ControlPlaneError(f"KUBERNAUT_HELM={chosen} is not a file")
        return path
    cached = cached_path()
    return cached if cached.is_file() else None


def build_helm(log: Callable[[str], None] | None = None) -> Path:
    """Build helm into the cache, printing progress (a first build takes a few minutes)."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    version = pinned_version()
    out = cached_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"helm: building helm {version} (first time only, a few minutes)...")
    started = time.monotonic()
    tmp = out.with_suffix(".partial")
    # -v lists each package as it is compiled: the progress of a build that downloads nothing.
    cmd = [_go(), "build", "-v", "-trimpath", f"-ldflags={_ldflags(version)}", "-o", str(tmp), _PACKAGE]
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    proc = subprocess.Popen(cmd, cwd=_MODULE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output: list[str] = []
    for line in proc.stdout:
        output.append(line.rstrip())
        if line.startswith("go: downloading"):
            say(f"helm:   {line.strip()}")
        elif len(output) % 100 == 0:
            say(f"helm:   {len(output)} packages compiled...")
    if proc.wait() != 0:
        tail = "\n".join(output[-30:])
        raise ControlPlaneError(f"building helm failed:\n{tail}")
    tmp.rename(out)
    say(f"helm: built helm {version} in {time.monotonic() - started:.0f}s at {out}")
    return out


def ensure_helm() -> Path:
    return find_helm() or build_helm()


def main() -> int:
    try:
        found = ensure_helm()
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"helm: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
