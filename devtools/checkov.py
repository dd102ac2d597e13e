"""checkov's Kubernetes checks on the rendered chart, offline, from a pinned checkov in its own virtualenv.

    python -m devtools.checkov path                 # print the venv's python (installing checkov the first time)
    python -m devtools.checkov [ci] [helm args...]  # render defaults or ci/<ci>-values.yaml, scan, print a summary

checkov pins an old `packaging`, so it gets a virtualenv of its own under .tools/checkov-<version>/, made with uv
(in the project's dev environment) or else venv and pip; it needs PyPI once. The venv is made beside its place and
renamed into it, so a concurrent run never sees a half-made one. Failures listed in SKIPS, each with its reason,
count as skipped; anything else that fails makes the command exit 1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml

from devtools import helm

CHECKOV_VERSION = "3.3.30"
REQUIREMENT = f"checkov=={CHECKOV_VERSION}"
VENV = helm.TOOLS / f"checkov-{CHECKOV_VERSION}"
PYTHON = VENV / "bin" / "python"
SKIPS = helm.CHART / "checkov-skips.yaml"

Status = Literal["passed", "failed", "skipped"]
STATUSES: dict[str, Status] = {"passed_checks": "passed", "failed_checks": "failed", "skipped_checks": "skipped"}


class CheckovError(RuntimeError):
    """checkov could not be installed, or gave no report."""


@dataclass(frozen=True, slots=True)
class Result:
    """One check on one resource (checkov's Kind.namespace.name) of one scanned file."""

    check_id: str
    check_name: str
    resource: str
    file: str
    status: Status
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Skip:
    """A check the chart fails on purpose, why, and on which resources (globs; none: every resource)."""

    check_id: str
    reason: str
    resources: tuple[str, ...] = ()

    def covers(self, result: Result) -> bool:
        """Whether this skip is about result's check and resource."""
        return result.check_id == self.check_id and (
            not self.resources or any(fnmatchcase(result.resource, pattern) for pattern in self.resources)
        )


def _run(command: list[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def _install(venv: Path) -> None:
    python = str(venv / "bin" / "python")
    if importlib.util.find_spec("uv"):
        uv = [sys.executable, "-m", "uv"]
        # relocatable: the venv is renamed into place once made, and its scripts must still run there
        steps = [
            [*uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(venv)],
            [*uv, "pip", "install", "--quiet", "--python", python, REQUIREMENT],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", REQUIREMENT],
        ]
    for command in steps:
        result = _run(command, timeout=900)
        if result.returncode != 0:
            raise CheckovError(f"installing {REQUIREMENT} (needs PyPI once) failed:\n{result.stderr.strip()}")
    version = _run([python, "-m", "checkov.main", "--version"], timeout=300)
    if version.stdout.strip() != CHECKOV_VERSION:
        raise CheckovError(f"the installed checkov reports {version.stdout.strip() or version.stderr.strip()!r}")


def ensure_checkov() -> Path:
    """The python of checkov's cached venv, made the first time."""
    if PYTHON.is_file():
        return PYTHON
    VENV.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{VENV.name}-", dir=VENV.parent))
    try:
        _install(staged)
        staged.chmod(0o755)  # mkdtemp made it private
        try:
            staged.rename(VENV)  # atomic; fails when a concurrent run got there first
        except OSError:
            if not PYTHON.is_file():
                raise CheckovError(f"{VENV} exists but has no python: remove it and run again") from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return PYTHON


def scan(directory: Path, *, timeout: float = 600) -> list[Result]:
    """Every result of checkov's Kubernetes checks on the manifests in directory, offline, no skip applied."""
    command = [
        str(ensure_checkov()), "-m", "checkov.main", "--directory", str(directory), "--framework", "kubernetes",
        "--skip-download", "--output", "json", "--compact",
    ]  # fmt: skip
    # CKV_* variables (CKV_SKIP_CHECK, CKV_CHECK, ...) in a developer's shell would change what runs.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CKV_", "BC_", "PRISMA_"))}
    result = _run(command, timeout=timeout, cwd=directory, env=env)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        report = None
    # exit 1 only says that some check failed
    if result.returncode not in (0, 1) or not isinstance(report, dict | list):
        raise CheckovError(f"checkov exited {result.returncode} without a report:\n{result.stderr.strip()[-4000:]}")
    results = []
    for part in report if isinstance(report, list) else [report]:
        found = part.get("results", {})
        if found.get("parsing_errors"):
            raise CheckovError(f"checkov could not parse {found['parsing_errors']}")
        for key, status in STATUSES.items():
            results += [
                Result(
                    check_id=check["check_id"],
                    check_name=check["check_name"],
                    resource=check["resource"],
                    file=Path(check["file_path"]).name,
                    status=status,
                    reason=(check.get("check_result") or {}).get("suppress_comment") or "",
                )
                for check in found.get(key, [])
            ]
    return results


def load_skips(path: Path = SKIPS) -> list[Skip]:
    """The skip list: check id -> reason and optional resource globs."""
    data = yaml.safe_load(path.read_text()) or {}
    skips = []
    for check_id, entry in (data.get("skips") or {}).items():
        if not isinstance(entry, dict) or not set(entry) <= {"reason", "resources"}:
            raise CheckovError(f"{path}: skips.{check_id} takes `reason` and optionally `resources`, got {entry!r}")
        skips.append(Skip(str(check_id), str(entry.get("reason") or "").strip(), tuple(entry.get("resources") or ())))
    return skips


def apply_skips(results: Iterable[Result], skips: Iterable[Skip]) -> list[Result]:
    """The results with each failure that a skip covers made skipped, with the skip's reason."""
    skips = list(skips)
    out = []
    for result in results:
        skip = next((s for s in skips if result.status == "failed" and s.covers(result)), None)
        out.append(replace(result, status="skipped", reason=skip.reason) if skip else result)
    return out


def counts(results: Iterable[Result]) -> dict[str, Counter[str]]:
    """Per scanned file, how many results passed, failed and were skipped."""
    per_file: dict[str, Counter[str]] = {}
    for result in results:
        per_file.setdefault(result.file, Counter())[result.status] += 1
    return per_file


def summary(results: list[Result]) -> str:
    """Counts per file, then each skipped check with its reason and every failure."""
    lines = [
        f"{file}: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped"
        for file, n in sorted(counts(results).items())
    ]
    skipped = Counter(r.check_id for r in results if r.status == "skipped")
    reasons = {r.check_id: r.reason for r in results if r.status == "skipped"}
    lines += [f"skipped {check_id} ({n}x): {reasons[check_id]}" for check_id, n in sorted(skipped.items())]
    lines += [f"FAILED {r.file}: {r.check_id} {r.check_name}: {r.resource}" for r in results if r.status == "failed"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["path"]:
            print(ensure_checkov())
            return 0
        scenario = argv[0] if argv and not argv[0].startswith("-") else None
        extra = argv[1:] if scenario else argv
        extra = extra[1:] if extra[:1] == ["--"] else extra
        rendered = helm.template(scenario, *extra)
        if rendered.returncode != 0:
            sys.stderr.write(rendered.stderr)
            return rendered.returncode
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / f"{scenario or 'defaults'}.yaml").write_text(rendered.stdout)
            results = apply_skips(scan(Path(tmp)), load_skips())
    except (CheckovError, helm.HelmError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(results))
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
