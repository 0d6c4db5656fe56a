"""Real Redis topologies for tests: a 3-node Cluster and a Sentinel, on free loopback ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from contextlib import AbstractContextManager
from types import TracebackType

import redis

from finsignal.embedded import EmbeddedRedis, _Service, free_port, redis_server_binary


def redis_cli_binary() -> str | None:
    """`redis-cli`, which creates the cluster; None when not installed."""
    return shutil.which("redis-cli")


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterNode(EmbeddedRedis):
    """One `redis-server --cluster-enabled yes`, its cluster state file in its own temp dir."""

    name = "redis-cluster-node"

    def __init__(self) -> None:
        super().__init__(port=cluster_port())

    def command(self) -> list[str]:
        return [*super().command(), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000"]


class RedisClusterProcesses(AbstractContextManager):
    """Three primaries, no replicas, slots spread by `redis-cli --cluster create`; `url` names the first node."""

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = [ClusterNode() for _ in range(nodes)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 30.0) -> RedisClusterProcesses:
        cli = redis_cli_binary()
        if cli is None:
            raise RuntimeError("redis-cli is not installed")
        try:
            for node in self.nodes:
                node.start()
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=timeout_s)
            self._wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, timeout_s: float) -> None:
        """Until every node reports `cluster_state:ok` and knows all the others."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                client = redis.Redis(port=node.port)
                try:
                    info = client.cluster("info")
                    states.append(info.get("cluster_state") == "ok"
                                  and int(info.get("cluster_known_nodes", 0)) == len(self.nodes))
                finally:
                    client.close()
            if all(states):
                return
            time.sleep(0.1)
        raise TimeoutError(f"cluster not ok within {timeout_s}s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterProcesses:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Sentinel(_Service):
    """`redis-server --sentinel` monitoring one master as `service`."""

    name = "redis-sentinel"

    def __init__(self, master_port: int, service: str = "mymaster") -> None:
        super().__init__()
        self.master_port = master_port
        self.service = service
        self.binary = redis_server_binary()

    def command(self) -> list[str]:
        config = self._logdir / "sentinel.conf"  # a Sentinel rewrites its config: it must be a writable file
        config.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self._logdir}\n"
                          f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 1\n"
                          f"sentinel down-after-milliseconds {self.service} 5000\n")
        return [self.binary, str(config), "--sentinel"]

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"
