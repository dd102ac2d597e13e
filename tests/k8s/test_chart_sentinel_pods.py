"""The chart's in-chart Redis Sentinel (redis.mode=sentinel) run as its pods would run: the rendered containers'
commands, scripts and environment as real redis-server and Sentinel processes (devtools/chart_pods.py). A pod's
node is lost by SIGKILLing both its containers; it comes back with its data folder, as with its PVC."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devtools.chart_pods import FAST_FAILOVER, ChartSentinelPods
from devtools.redis_server import sync_client

pytestmark = pytest.mark.integration

PROMOTION_S = 20.0
WRITES_BACK_S = 15.0


@pytest.fixture
def pods(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ChartSentinelPods]:
    marker = request.node.get_closest_marker("chart_values")
    values = FAST_FAILOVER + (tuple(marker.args) if marker else ())
    started = ChartSentinelPods(folder=tmp_path, values=values).start()
    try:
        yield started
    finally:
        started.stop()


def decisions(pods: ChartSentinelPods, index: int) -> list[str]:
    """What pod `index`'s redis.sh decided at each of its starts."""
    return [line for line in pods.log(index, "redis").splitlines() if "redis.sh: starting" in line]


def write_until_accepted(url: str, key: str, timeout_s: float = WRITES_BACK_S) -> float:
    """SET through the services' URL until the master takes it and a replica acknowledges it; seconds it took."""
    start = time.monotonic()
    errors: set[str] = set()
    while time.monotonic() - start < timeout_s:
        try:
            with sync_client(url, 1.0) as client:
                client.set(key, "1")
                if client.wait(1, 1000) >= 1:
                    return time.monotonic() - start
        except (redis.RedisError, OSError) as exc:
            errors.add(type(exc).__name__ + ": " + str(exc)[:80])
        time.sleep(0.1)
    raise AssertionError(f"no write accepted within {timeout_s}s: {errors}")


def read(port: int, key: str) -> bytes | None:
    with sync_client(f"redis://127.0.0.1:{port}/0", 1.0) as client:
        value = client.get(key)
    return value if isinstance(value, bytes) else None


def test_a_new_install_elects_the_first_pod_and_the_services_url_finds_it(pods: ChartSentinelPods) -> None:
    first = pods.pods[0]
    assert pods.master_port == first.redis_port
    assert "first pod" in pods.log(0, "sentinel") and "as the master" in decisions(pods, 0)[-1]
    for pod in pods.pods[1:]:
        role = pods.role(pod)
        assert (
            role["role"] == "slave" and role["master_port"] == first.redis_port and role["master_link_status"] == "up"
        )
    # The URL the chart gives every service lists each pod's sentinel and the chart's master name.
    assert pods.chart_url.startswith("redis+sentinel://trader-trader-stack-redis-0.trader-trader-stack-redis.trader.")
    assert pods.chart_url.endswith(f"/{pods.master_name}/0") and pods.chart_url.count(":26379") == len(pods.pods)
    write_until_accepted(pods.url, "chart:new-install")
    for pod in pods.pods:
        assert read(pod.redis_port, "chart:new-install") == b"1"
        with sync_client(f"redis://127.0.0.1:{pod.redis_port}/0") as client:
            config = client.config_get("appendonly") | client.config_get("dir")
        assert config == {"appendonly": "yes", "dir": str(pod.data_dir)}, "the AOF is not on the pod's volume"


def test_losing_the_masters_node_promotes_a_replica_and_the_pod_returns_as_its_replica(
    pods: ChartSentinelPods,
) -> None:
    old = pods.master_port
    write_until_accepted(pods.url, "chart:before")
    killed = time.monotonic()
    pods.kill(old)
    new = pods.wait_for_failover(old, timeout_s=PROMOTION_S)
    promoted = time.monotonic() - killed
    # The StatefulSet brings the pod back with its volume at once, while the sentinel that leads the failover still
    # names the old master in SENTINEL MASTER (with the new epoch): it must follow the new master, not lead again.
    pods.start_pod(0)
    writes_back = write_until_accepted(pods.url, "chart:after")
    assert read(new, "chart:before") == b"1", "a write a replica acknowledged before the kill was lost"
    pods.wait_whole()
    assert decisions(pods, 0)[-1].endswith(f"as a replica of localhost:{new}"), decisions(pods, 0)
    role = pods.role(pods.pods[0])
    assert role["role"] == "slave" and role["master_port"] == new
    assert pods.master_port == new
    assert read(pods.pods[0].redis_port, "chart:after") == b"1"
    print(
        f"\nchart's Sentinel pods: master pod 0 lost, pod {pods.pod_of(new).index} promoted after {promoted:.2f} s,"
        f" writes through the services' URL accepted {writes_back:.2f} s later; pod 0 back as its replica"
    )


def failed_over(pods: ChartSentinelPods, key: str) -> int:
    """Lose pod 0 (the master of a new install), wait for the failover to end, write `key` acknowledged by a
    replica."""
    old = pods.master_port
    pods.kill(old)
    new = pods.wait_for_failover(old, timeout_s=PROMOTION_S)
    pods.wait_for_failover_end(new, timeout_s=PROMOTION_S)
    write_until_accepted(pods.url, key)
    return new


def test_a_pod_that_slept_through_a_failover_and_starts_first_does_not_bring_its_old_master_back(
    pods: ChartSentinelPods,
) -> None:
    last = failed_over(pods, "chart:kept")
    for pod in pods.pods[1:]:  # then the others are lost too: pod 0's sentinel still thinks pod 0 leads
        pods.kill_pod(pod.index)
    pods.start_pod(0)
    time.sleep(3)
    for pod in pods.pods[1:]:
        pods.start_pod(pod.index)
    pods.wait_whole()
    assert pods.master_port == last, "the old master led again: the writes after the failover are lost"
    for pod in pods.pods:
        assert read(pod.redis_port, "chart:kept") == b"1", f"pod {pod.index} lost a write a replica acknowledged"
    assert decisions(pods, 0)[-1].endswith(f"as a replica of localhost:{last}"), decisions(pods, 0)


def test_every_pod_restarting_at_once_keeps_the_last_master_and_its_data(pods: ChartSentinelPods) -> None:
    last = failed_over(pods, "chart:kept")
    for pod in pods.pods:  # the whole set lost at once: a zone outage, or every node drained together
        pods.kill_pod(pod.index)
    for pod in pods.pods:
        pods.start_pod(pod.index)
    pods.wait_whole()
    masters = [p.index for p in pods.pods if pods.role(p)["role"] == "master"]
    assert masters == [pods.pod_of(last).index], f"masters now: {masters}"
    assert pods.master_port == last
    for pod in pods.pods:
        assert read(pod.redis_port, "chart:kept") == b"1", f"pod {pod.index} lost the data"
    write_until_accepted(pods.url, "chart:after-restart")


def aborted_failovers(pods: ChartSentinelPods) -> int:
    """Failovers the sentinels gave up for want of a replica to promote, so far."""
    return sum(pods.log(p.index, "sentinel").count("-failover-abort-no-good-slave") for p in pods.pods)


def test_no_replica_is_promoted_over_a_master_still_coming_back_from_a_whole_set_outage(
    pods: ChartSentinelPods,
) -> None:
    last = failed_over(pods, "chart:kept")
    for pod in pods.pods:
        pods.kill_pod(pod.index)
    master = pods.pod_of(last)
    before = aborted_failovers(pods)
    for pod in pods.pods:  # the replicas' pods first (pod 0 among them, whose data predates the failover)
        if pod is not master:
            pods.start_pod(pod.index)
    # The master's pod is slow to come back: the sentinels judge it down and try a failover, finding no replica to
    # promote (or, wrongly, promoting one).
    deadline = time.monotonic() + PROMOTION_S
    while aborted_failovers(pods) == before:
        named = [address[1] for address in pods.master_addresses() if address]
        assert not [port for port in named if port != last and named.count(port) > len(pods.pods) // 2], (
            "a replica that had not copied the master's data since it restarted was promoted"
        )
        assert time.monotonic() < deadline, f"no failover was tried without the master: {pods.sentinel_logs()}"
        time.sleep(0.2)
    pods.start_pod(master.index)
    pods.wait_whole()
    assert pods.master_port == last, "a replica that had not copied the master's data since it restarted led"
    for pod in pods.pods:
        assert read(pod.redis_port, "chart:kept") == b"1", f"pod {pod.index} lost a write a replica acknowledged"
    assert "promoted from now on" in pods.log(0, "redis")


def test_a_masters_pod_back_with_an_empty_volume_waits_for_a_promotion_instead_of_wiping_the_replicas(
    pods: ChartSentinelPods,
) -> None:
    old = pods.master_port
    write_until_accepted(pods.url, "chart:kept")
    lost = pods.pod_of(old)
    pods.kill_pod(lost.index)
    shutil.rmtree(lost.data_dir)  # its node and local volume are gone: the pod comes back at once on a new, empty PVC
    pods.start_pod(lost.index)
    new = pods.wait_for_failover(old, timeout_s=PROMOTION_S)
    pods.wait_whole()
    assert "the data volume is empty" in pods.log(lost.index, "redis")
    assert pods.role(lost)["role"] == "slave" and pods.master_port == new
    for pod in pods.pods:
        assert read(pod.redis_port, "chart:kept") == b"1", f"pod {pod.index} lost a write a replica acknowledged"


def test_a_master_stopped_for_an_update_hands_its_role_over_first(pods: ChartSentinelPods) -> None:
    old = pods.master_port
    write_until_accepted(pods.url, "chart:before-update")
    pods.stop_pod(pods.pod_of(old).index)  # preStop, then SIGTERM, as the kubelet does
    assert "asked" in pods.log(0, "redis") and "to fail over" in pods.log(0, "redis")
    new = pods.master_port
    assert new != old, "the master stopped before a replica took over"
    assert read(new, "chart:before-update") == b"1"
    write_until_accepted(pods.url, "chart:during-update")


@pytest.mark.chart_values("redis.sentinel.minReplicasMaxLagSeconds=1")
def test_a_master_cut_off_from_its_replicas_refuses_writes(pods: ChartSentinelPods) -> None:
    master = pods.master_port
    for pod in pods.pods:
        if pod.redis_port != master:
            pods.kill_pod(pod.index)
    refused_key, refused = "", ""
    deadline = time.monotonic() + 10
    for i in range(1000):
        if time.monotonic() > deadline:
            break
        try:
            with sync_client(f"redis://127.0.0.1:{master}/0", 1.0) as client:
                client.set(f"chart:alone:{i}", "1")
            time.sleep(0.2)
        except redis.ResponseError as exc:
            refused_key, refused = f"chart:alone:{i}", str(exc)
            break
    assert refused.startswith("NOREPLICAS"), f"the lone master kept taking writes: {refused!r}"
    assert read(master, refused_key) is None, "the refused write was applied"

    pods.start_pod(next(p.index for p in pods.pods if p.redis_port != master))
    write_until_accepted(f"redis://127.0.0.1:{master}/0", "chart:alone:back")
