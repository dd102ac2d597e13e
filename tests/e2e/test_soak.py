"""A short soak in `make test` (the long one is `make soak`): the whole stack twice over, on a simulator failing
one call in ten, through executor kills, a Redis restart, a ratelimit outage and a strategy leader's death."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.soak import run

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
def test_a_short_soak_keeps_every_invariant(tmp_path: Path) -> None:
    report = run(120, tmp_path)
    print("\n" + report.table())
    assert not report.failures(), "\n".join(report.failures())
