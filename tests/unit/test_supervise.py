"""The local runner's restart rule: how long it waits before starting a service that exited again."""

from __future__ import annotations

import signal

from devtools.supervise import MAX_DELAY_S, STABLE_AFTER_S, exit_reason, restart_delay


def test_restart_delay_doubles_for_quick_failures_is_capped_and_resets_after_a_stable_run() -> None:
    streak, delays = 0, []
    for _ in range(7):
        streak, delay = restart_delay(streak, uptime_s=2.0)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, MAX_DELAY_S, MAX_DELAY_S]
    assert restart_delay(streak, uptime_s=STABLE_AFTER_S) == (1, 1)
    assert exit_reason(-signal.SIGKILL) == "with signal SIGKILL"
    assert exit_reason(0) == "with code 0"
