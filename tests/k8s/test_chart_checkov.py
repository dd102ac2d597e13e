"""checkov's Kubernetes checks on every rendered scenario: nothing fails but the chart's listed skips, each skip
says why and is still needed, so a new failure and a stale skip both fail here.

checkov comes from devtools/checkov.py (a pinned PyPI release in its own venv under .tools/); it is slow to start,
so it runs once, without skips, over every scenario, and the skips are applied here.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from devtools import checkov
from tests.k8s.test_chart import CHART, CRD_API, render

pytestmark = pytest.mark.integration

SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in CHART.glob("ci/*-values.yaml"))
# Every CI scenario as is (globbed: scenarios get added), plus the default one on a cluster with the Prometheus
# operator.
RUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{name: (name, ()) for name in SCENARIOS},
    "sim+prometheus-operator": ("sim", ("--api-versions", CRD_API)),
    # What the image skips promise: with digests the image checks pass.
    "sentinel+digests": (
        "sentinel",
        ("--set", f"image.digest=sha256:{'a' * 64}", "--set", f"redis.image.digest=sha256:{'b' * 64}"),
    ),
}
IMAGE_CHECKS = {"CKV_K8S_43", "CKV_K8S_15"}
# checkov 3.3.30 passes 90 distinct checks on this chart; far fewer means it scanned little or nothing.
MIN_PASSED_CHECKS = 80


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[checkov.Result]:
    directory = tmp_path_factory.mktemp("rendered")
    for run, (scenario, extra) in RUNS.items():
        (directory / f"{run}.yaml").write_text(yaml.safe_dump_all(render(scenario, *extra)))
    try:
        return checkov.scan(directory)
    except checkov.CheckovError as exc:
        pytest.fail(f"checkov failed: {exc}\n`python -m devtools.checkov path` installs it (needs PyPI once)")


@pytest.fixture(scope="module")
def skips() -> list[checkov.Skip]:
    return checkov.load_skips()


def test_checkov_ran_its_checks_on_every_scenario(results: list[checkov.Result], skips: list[checkov.Skip]) -> None:
    per_file = checkov.counts(checkov.apply_skips(results, skips))
    for run in RUNS:
        n = per_file.get(f"{run}.yaml", {})
        print(f"checkov {run}: {n.get('passed', 0)} passed, {n.get('failed', 0)} failed, {n.get('skipped', 0)} skipped")
    assert set(per_file) == {f"{run}.yaml" for run in RUNS}, "checkov reported nothing on some scenario"
    passed = {r.check_id for r in results if r.status == "passed"}
    assert len(passed) >= MIN_PASSED_CHECKS, f"only {len(passed)} distinct checks passed: {sorted(passed)}"


def test_nothing_fails_but_the_listed_skips(results: list[checkov.Result], skips: list[checkov.Skip]) -> None:
    failed = [
        f"{Path(r.file).stem}: {r.check_id} {r.check_name}: {r.resource}"
        for r in checkov.apply_skips(results, skips)
        if r.status == "failed"
    ]
    assert not failed, f"fix the chart, or add a skip with its reason to {checkov.SKIPS.name}:\n" + "\n".join(failed)


def test_every_skip_says_why(skips: list[checkov.Skip]) -> None:
    assert not [s.check_id for s in skips if not re.fullmatch(r"CKV2?_K8S_\d+", s.check_id)], "not a Kubernetes check"
    assert not [s.check_id for s in skips if not s.reason], "skipped without a reason"


def test_every_skip_is_still_needed(results: list[checkov.Result], skips: list[checkov.Skip]) -> None:
    failed = [r for r in results if r.status == "failed"]
    stale = [skip.check_id for skip in skips if not any(skip.covers(r) for r in failed)]
    stale += [
        f"{skip.check_id} on {pattern}"
        for skip in skips
        for pattern in skip.resources
        if not any(replace(skip, resources=(pattern,)).covers(r) for r in failed)
    ]
    assert not stale, f"no longer failing, so remove from {checkov.SKIPS.name}: {', '.join(stale)}"


def test_pinned_digests_satisfy_the_skipped_image_checks(results: list[checkov.Result]) -> None:
    pinned = [r for r in results if Path(r.file).stem == "sentinel+digests" and r.check_id in IMAGE_CHECKS]
    assert pinned and all(r.status == "passed" for r in pinned), [(r.check_id, r.resource, r.status) for r in pinned]
