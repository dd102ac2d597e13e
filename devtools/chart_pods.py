"""The Helm chart's in-chart Redis Sentinel pods as processes on this machine, to run what the pods run.

The chart is rendered with `redis.mode=sentinel`; each pod of its Redis StatefulSet becomes two processes (its
`redis` and `sentinel` containers) started with the containers' commands, the scripts from the rendered ConfigMap
and the containers' environment. Only what a cluster provides is replaced: the pods' DNS names become `localhost`
with a port of their own, the data volume a folder per pod (kept across restarts, like its PVC) and POD_NAME the
StatefulSet's pod name. Killing a pod kills both of its processes, as losing its node would.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis
import yaml

from devtools import helm
from devtools.process import stop_process
from devtools.redis_server import SentinelWatched, free_port, sync_client

SCENARIO = "sentinel"
SCRIPTS_MOUNT = "/scripts"
LOCAL_HOST = "localhost"
# Values for tests: a master judged down after 1 s, so a failover takes seconds; the rest as the chart renders it.
FAST_FAILOVER = ("redis.sentinel.downAfterMilliseconds=1000", "redis.sentinel.failoverTimeoutMilliseconds=3000")
# The chart's addresses: <pod>.<headless service>.<namespace>.svc.<cluster domain>:<port>.
NODE_ADDRESS = re.compile(r"(?P<pod>[a-z0-9-]+-(?P<index>\d+))\.[a-z0-9.-]+:(?P<port>6379|26379)")


class ChartRenderError(RuntimeError):
    """The chart did not render, or not the objects this module expects."""


def render(*values: str) -> list[dict[str, Any]]:
    """The sentinel scenario's objects, with extra `--set` values."""
    result = helm.template(SCENARIO, *(arg for value in values for arg in ("--set", value)))
    if result.returncode != 0:
        raise ChartRenderError(f"helm template {SCENARIO} {values} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(found) != 1:
        raise ChartRenderError(f"expected one {kind} {name or ''}, rendered {len(found)}")
    return found[0]


def _mount(container: dict[str, Any], volume: str) -> str:
    (mount,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return str(mount)


def image_userland(folder: Path) -> Path:
    """A PATH holding only what the Redis image offers the scripts: busybox's applets (the alpine image's sh, awk,
    timeout...) and redis-server and redis-cli, so a GNU-only option in a script fails here as it would there."""
    missing = [tool for tool in ("busybox", "redis-server", "redis-cli") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not on PATH: the chart's Redis pods run their scripts with busybox and"
            " redis-server/redis-cli (apt-get install busybox redis-server)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    busybox = str(shutil.which("busybox"))
    listed = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    links = {applet: busybox for applet in listed} | {t: str(shutil.which(t)) for t in ("redis-server", "redis-cli")}
    for name, target in links.items():
        link = folder / name
        if not link.exists():
            link.symlink_to(target)
    return folder


@dataclass
class Pod:
    """One pod of the StatefulSet: its ordinal, ports here, data folder and running containers."""

    index: int
    name: str
    redis_port: int
    sentinel_port: int
    data_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return any(p.poll() is None for p in self.processes.values())


class ChartSentinelPods(SentinelWatched):
    """The chart's Redis StatefulSet in sentinel mode, its pods as local processes; `url` is the services' REDIS_URL
    as the chart renders it, pointed at these pods."""

    def __init__(self, *, folder: Path, values: tuple[str, ...] = ()):
        docs = render(*values)
        self.statefulset = _one(docs, "StatefulSet")
        name = self.statefulset["metadata"]["name"]
        scripts = _one(docs, "ConfigMap", f"{name}-scripts")["data"]
        self.folder = folder
        self.bin_dir = image_userland(folder / "bin")
        self.scripts_dir = folder / "scripts"
        self.scripts_dir.mkdir(parents=True, exist_ok=True)
        for file_name, text in scripts.items():
            (self.scripts_dir / file_name).write_text(text)
        pod_spec = self.statefulset["spec"]["template"]["spec"]
        self.containers = {c["name"]: c for c in pod_spec["containers"]}
        self.pods = [
            Pod(i, f"{name}-{i}", free_port(), free_port(), folder / f"{name}-{i}")
            for i in range(self.statefulset["spec"]["replicas"])
        ]
        env = {e["name"]: e for e in self.containers["redis"]["env"]}
        self.master_name = env["MASTER_NAME"]["value"]
        self.sentinel_ports = [p.sentinel_port for p in self.pods]
        deployments = [d for d in docs if d["kind"] == "Deployment"]
        if not deployments:
            raise ChartRenderError("the sentinel scenario rendered no service Deployment")
        (service_env,) = [e for e in deployments[0]["spec"]["template"]["spec"]["containers"][0]["env"]
                          if e["name"] == "REDIS_URL"]  # fmt: skip
        self.chart_url = service_env["value"]

    def local(self, text: str) -> str:
        """Chart addresses in a value (a node list, a URL) replaced by this machine's."""

        def swap(match: re.Match[str]) -> str:
            pod = self.pods[int(match["index"])]
            if match["pod"] != pod.name:
                raise ChartRenderError(f"address {match[0]} names no pod of the StatefulSet")
            return f"{LOCAL_HOST}:{pod.redis_port if match['port'] == '6379' else pod.sentinel_port}"

        return NODE_ADDRESS.sub(swap, text)

    @property
    def url(self) -> str:
        return self.local(self.chart_url)

    def environment(self, pod: Pod, container: str) -> dict[str, str]:
        """A container's environment as the chart renders it, with the cluster's parts made local."""
        env = {"PATH": str(self.bin_dir)}
        for item in self.containers[container]["env"]:
            if "value" in item:
                env[item["name"]] = self.local(item["value"])
            elif item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}:
                env[item["name"]] = pod.name
            else:
                raise ChartRenderError(f"{container}: no local value for {item}")
        if env.get("DATA_DIR") != _mount(self.containers[container], "data"):
            raise ChartRenderError(f"{container}: DATA_DIR is not the data volume's mount path")
        env["DATA_DIR"] = str(pod.data_dir)
        # Listen on loopback only: in a pod the network namespace is the pod's own.
        env["REDIS_BIND"] = env["SENTINEL_BIND"] = "127.0.0.1"
        return env

    def command(self, container: str, command: list[str]) -> list[str]:
        if _mount(self.containers[container], "scripts") != SCRIPTS_MOUNT:
            raise ChartRenderError(f"{container}: the scripts are not mounted at {SCRIPTS_MOUNT}")
        return [str(self.scripts_dir / arg.removeprefix(SCRIPTS_MOUNT + "/")) if arg.startswith(SCRIPTS_MOUNT)
                else arg for arg in command]  # fmt: skip

    def start_pod(self, index: int) -> None:
        """Start (or restart) pod `index`'s containers with its data folder as it was left."""
        pod = self.pods[index]
        if pod.running:
            raise RuntimeError(f"{pod.name} is running")
        pod.data_dir.mkdir(parents=True, exist_ok=True)
        for name, container in self.containers.items():
            log = pod.logs.get(name) or (self.folder / f"{pod.name}-{name}.log").open("ab")
            pod.logs[name] = log
            pod.processes[name] = subprocess.Popen(
                self.command(name, container["command"]), env=self.environment(pod, name), stdout=log, stderr=log
            )

    def start(self, timeout_s: float = 30.0) -> ChartSentinelPods:
        """Start every pod at once (the chart's Parallel pod management) and wait until the set is whole."""
        try:
            for pod in self.pods:
                self.start_pod(pod.index)
            self.wait_whole(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self, pod: Pod) -> bool:
        """The redis container's readiness probe, run as the kubelet would."""
        probe = self.containers["redis"]["readinessProbe"]["exec"]["command"]
        result = subprocess.run(
            self.command("redis", probe), env=self.environment(pod, "redis"), capture_output=True, timeout=10,
            check=False,
        )  # fmt: skip
        return result.returncode == 0

    def role(self, pod: Pod) -> dict[str, Any]:
        """INFO replication of a pod's Redis."""
        with sync_client(f"redis://127.0.0.1:{pod.redis_port}/0", 1.0) as client:
            return dict(client.info("replication"))

    def pod_of(self, redis_port: int) -> Pod:
        return next(p for p in self.pods if p.redis_port == redis_port)

    def wait_whole(self, timeout_s: float = 30.0) -> None:
        """Until every running pod is ready and each running sentinel sees the others and every replica, synced and
        promotable."""
        deadline = time.monotonic() + timeout_s
        running = [p for p in self.pods if p.running]
        while time.monotonic() < deadline:
            try:
                if all(self.ready(p) for p in running) and all(self._sentinel_whole(p, running) for p in running):
                    return
            except (redis.RedisError, OSError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the pods did not come together within {timeout_s}s; logs: {self.sentinel_logs()}")

    def _sentinel_whole(self, pod: Pod, running: list[Pod]) -> bool:
        with sync_client(f"redis://127.0.0.1:{pod.sentinel_port}/0", 0.5) as sentinel:
            state = sentinel.sentinel_master(self.master_name)
            if state["num-other-sentinels"] < len(running) - 1 or state["num-slaves"] < len(running) - 1:
                return False
            sentinel.sentinel_ckquorum(self.master_name)
            replicas = sentinel.sentinel_slaves(self.master_name)
        ports = {p.redis_port for p in running}
        return all(
            not r["is_sdown"] and r["master-link-status"] == "ok" and int(r["slave-priority"]) > 0
            for r in replicas
            if r["port"] in ports
        )

    def stop_pod(self, index: int) -> None:
        """Stop pod `index` as the kubelet does: each container's preStop hook, then SIGTERM."""
        pod = self.pods[index]
        for name, container in self.containers.items():
            hook = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            if hook:
                subprocess.run(self.command(name, hook), env=self.environment(pod, name), timeout=60, check=False,
                               stdout=pod.logs[name], stderr=pod.logs[name])  # fmt: skip
        for process in pod.processes.values():
            stop_process(process)

    def kill(self, port: int) -> None:
        """Lose the node of the pod whose Redis is on `port`: SIGKILL both its containers."""
        self.kill_pod(self.pod_of(port).index)

    def kill_pod(self, index: int) -> None:
        for process in self.pods[index].processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()

    def log(self, index: int, container: str) -> str:
        pod = self.pods[index]
        return (self.folder / f"{pod.name}-{container}.log").read_text(errors="replace")

    def sentinel_logs(self, lines: int = 30) -> dict[int, list[str]]:
        return {p.sentinel_port: self.log(p.index, "sentinel").splitlines()[-lines:] for p in self.pods}

    def stop(self) -> None:
        for pod in self.pods:
            for process in pod.processes.values():
                stop_process(process)
            for log in pod.logs.values():
                log.close()
            pod.logs.clear()
