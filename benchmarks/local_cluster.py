"""A Ray cluster of separate `ray start` processes on this machine's loopback: try `submit` on
several nodes before real machines (the tests' multi-node fixture is this class).

PYTHONPATH=. python3 benchmarks/local_cluster.py --workers 2     # head 127.0.0.2 (0 CPUs), workers 127.0.0.3, 127.0.0.4
# it prints the addresses and the environment for clients, then waits; Ctrl-C stops every node

Every node is its own `ray start --block` with its own node IP, temp dir, ports, TMPDIR (so no
node reads another's local mirror of a URI run dir) and resources: one CPU and a custom
resource that names each worker (``node-3`` for 127.0.0.3). The head has no CPUs,
so trials run only on the workers, and its dashboard (Jobs API) listens on 127.0.0.1.

Why not 127.0.0.1 for the nodes: Ray 2.60 replaces the node IP 127.0.0.1 (and ``localhost``,
``::1``) by the machine's routable address (``ray._private.services.resolve_ip_for_localhost``),
so a node started with ``--node-ip-address 127.0.0.1`` advertises, and its peers connect to, the
non-loopback address. Any other 127.x address is used as given (Linux routes all of 127/8 to
loopback).

The cluster uses token authentication (Ray 2.60's default) with a token of its own, given to
the nodes and clients as ``RAY_AUTH_TOKEN``: nothing is written to ``~/.ray``. Processes are
stopped by pid (never ``ray stop``, which would stop every Ray instance on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HEAD_IP = "127.0.0.2"
DEFAULT_PORT_BASE = 64220  # the head's GCS; node i takes 10 ports from base + 10 (i + 1), its workers' from base + 100
WORKER_PORTS = 50  # per node
NODE_PORT_OPTIONS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)
OBJECT_STORE_BYTES = 200 * 2**20  # the search passes little through it; Ray's default takes 30% of the memory
HEAD_PORT_OPTIONS = ("--port", "--dashboard-port", "--ray-client-server-port")


def node_resource(ip: str) -> str:
    """The custom resource that marks the node at ``ip`` (one unit): ``node-3`` for 127.0.0.3."""
    return f"node-{ip.rsplit('.', 1)[1]}"


@dataclass
class Node:
    """One `ray start --block` process of the cluster (the leader of its own process group)."""

    ip: str
    process: subprocess.Popen
    temp_dir: Path
    tmp_dir: Path  # the node's TMPDIR: its local disk for mirrors of URI run dirs

    def processes(self) -> dict[int, str]:
        """This node's live processes (`ray start`, raylet, GCS, agents, workers): pid -> command line."""
        found = descendants(self.process.pid)
        if self.process.poll() is None:
            found[self.process.pid] = "ray start"
        return found

    def raylet_and_workers(self) -> dict[int, str]:
        """The node's raylet and the processes it started (its workers and agents)."""
        raylets = [pid for pid, command in self.processes().items() if "/raylet/raylet " in command]
        found = {pid: "raylet" for pid in raylets}
        for pid in raylets:
            found.update(descendants(pid))
        return found

    def kill(self) -> list[int]:
        """SIGKILL every process of the node, one pid at a time; return the pids killed."""
        killed = kill_pids(self.processes())
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        return killed


@dataclass
class LocalCluster:
    """A head and worker nodes on loopback addresses, each a separate `ray start` process."""

    root: Path  # temp dirs, logs and TMPDIRs of the nodes (short: Ray's socket paths are limited)
    port_base: int = DEFAULT_PORT_BASE
    extra_env: dict[str, str] = field(default_factory=dict)  # for every node, e.g. cloud credentials
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The GCS address, for `ray start --address` and `start --ray-address`."""
        return f"{HEAD_IP}:{self.port_base}"

    @property
    def dashboard(self) -> str:
        """The Jobs API, for `submit --address`."""
        return f"http://127.0.0.1:{self.port_base + 1}"

    @property
    def env(self) -> dict[str, str]:
        """The environment of the cluster's clients: token authentication on, with the cluster's token."""
        return {**os.environ, **self.extra_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def start_head(self, timeout: float = 120) -> Node:
        """Start the head: GCS and dashboard, no CPUs (it runs the job's driver, not trials)."""
        ports = {option: self.port_base + i for i, option in enumerate(HEAD_PORT_OPTIONS)}
        options = ["--head", "--dashboard-host", "127.0.0.1", "--num-cpus", "0", *_words(ports)]
        node = self._start(HEAD_IP, 0, options)
        self._wait(lambda: _jobs_api_up(self), node, timeout, f"the Jobs API at {self.dashboard}")
        return node

    def add_workers(self, count: int = 1, cpus: int = 1, timeout: float = 120) -> list[Node]:
        """Start ``count`` worker nodes (the next addresses) with ``cpus`` CPUs and their ``node_resource``
        each, and wait until Ray lists them all."""
        started = []
        for _ in range(count):
            ip = f"127.0.0.{int(HEAD_IP.rsplit('.', 1)[1]) + len(self.nodes)}"
            options = [
                "--address",
                self.address,
                "--num-cpus",
                str(cpus),
                "--resources",
                json.dumps({node_resource(ip): 1}),
            ]
            started.append(self._start(ip, len(self.nodes), options))
        for node in started:
            self._wait(lambda ip=node.ip: ip in self.alive_ips(), node, timeout, f"node {node.ip} in the cluster")
        return started

    def api(self, path: str) -> dict:
        """GET ``path`` of the head's dashboard API (with the cluster's token) as JSON."""
        request = urllib.request.Request(self.dashboard + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def listed_nodes(self) -> list[dict]:
        """Every node Ray lists (alive or dead): ``{"ip", "alive", "resources"}``, in the order they joined."""
        nodes = self.api("/api/v0/nodes?limit=100&detail=1")["data"]["result"]["result"]
        nodes.sort(key=lambda node: node["start_time_ms"])
        return [{"ip": n["node_ip"], "alive": n["state"] == "ALIVE", "resources": n["resources_total"]} for n in nodes]

    def alive_ips(self) -> list[str]:
        """The node IPs Ray lists as alive (none while the head does not answer)."""
        try:
            return [node["ip"] for node in self.listed_nodes() if node["alive"]]
        except OSError:
            return []

    def job_status(self, job: str) -> str:
        """A Ray Job's status: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
        return self.api(f"/api/jobs/{job}")["status"]

    def processes(self) -> dict[int, str]:
        """Every live process of every node."""
        return {pid: command for node in self.nodes for pid, command in node.processes().items()}

    def stop(self) -> None:
        """SIGKILL every node's processes by pid (the head last) and remove the cluster's folders."""
        for node in reversed(self.nodes):
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def _start(self, ip: str, index: int, options: list[str]) -> Node:
        base = self.port_base + 10 * (index + 1)
        ports = {option: base + i for i, option in enumerate(NODE_PORT_OPTIONS)}
        workers = self.port_base + 100 + WORKER_PORTS * index
        temp_dir, tmp_dir = self.root / f"n{index}", self.root / f"n{index}-tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        command = [
            "ray",
            "start",
            "--block",
            "--node-ip-address",
            ip,
            "--temp-dir",
            str(temp_dir),
            "--disable-usage-stats",
            "--object-store-memory",
            str(OBJECT_STORE_BYTES),
            "--min-worker-port",
            str(workers),
            "--max-worker-port",
            str(workers + WORKER_PORTS - 1),
            *_words(ports),
            *options,
        ]
        with (self.root / f"n{index}.log").open("w") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**self.env, "TMPDIR": str(tmp_dir)},
            )
        node = Node(ip, process, temp_dir, tmp_dir)
        self.nodes.append(node)
        return node

    def _wait(self, condition, node: Node, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if node.process.poll() is not None or time.monotonic() > deadline:
                log = (self.root / f"n{self.nodes.index(node)}.log").read_text()[-2000:]
                raise RuntimeError(f"{what} did not come up (ray start: {node.process.poll()}): {log}")
            time.sleep(1)


def _jobs_api_up(cluster: LocalCluster) -> bool:
    try:
        cluster.api("/api/jobs/")
    except OSError:
        return False
    return True


def _words(options: dict[str, int]) -> list[str]:
    return [str(word) for option, port in options.items() for word in (option, port)]


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of process ``root``: pid -> command line (from /proc)."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (ValueError, OSError):
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.update((pid, commands[pid]) for pid in children)
        frontier += children
    return found


def kill_pids(processes: dict[int, str]) -> list[int]:
    """SIGKILL each pid; return those that were alive."""
    killed = []
    for pid in processes:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker nodes (one CPU each)")
    parser.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE)
    args = parser.parse_args()
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="ray-loop-", dir="/tmp")), args.port_base)
    try:
        cluster.start_head()
        cluster.add_workers(args.workers)
        print(f"nodes: {', '.join(node.ip for node in cluster.nodes)} (head {HEAD_IP}, no CPUs)")
        print(f"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN={cluster.token}")
        print(f"prumux-search submit --address {cluster.dashboard} ...   # or start --ray-address {cluster.address}")
        print("Ctrl-C stops every node", flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
