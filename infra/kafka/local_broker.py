#!/usr/bin/env python3
"""Run a single-node Apache Kafka broker (KRaft) on 127.0.0.1 without Docker.

Fetches ``org.apache.kafka:kafka_2.13`` and the logging jars it needs from Maven Central
(``mvn dependency:copy-dependencies`` over ``pom.xml`` beside this file) into a cache
directory, formats the storage with ``kafka.tools.StorageTool`` and starts ``kafka.Kafka``
with the machine's Java 17.

    python infra/kafka/local_broker.py --port 9092            # runs until Ctrl+C
    python infra/kafka/local_broker.py --fetch-only           # just fill the cache

The test suite imports :class:`LocalBroker` from this file; with a :class:`SecureListener` the
broker's client port speaks SASL_SSL (TLS, and SASL users by PLAIN and SCRAM-SHA-512) instead of
PLAINTEXT. Needs ``java`` and ``mvn`` on PATH.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(os.environ.get("TRAINWIRE_KAFKA_CACHE", Path.home() / ".cache" / "trainwire" / "kafka"))
LOG4J2_CONFIG = """\
<Configuration status="warn">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="warn"><AppenderRef ref="stdout"/></Root>
    <Logger name="kafka.server.KafkaRaftServer" level="info"/>
  </Loggers>
</Configuration>
"""


def fetch(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Download the broker's jars into ``cache_dir/libs`` (once) and return that folder."""
    libs = cache_dir / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(HERE / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    subprocess.run(cmd, check=True)
    marker.write_text("ok\n")
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class SecureListener:
    """The client port as SASL_SSL: TLS with a PEM certificate, and SASL users and their passwords.

    ``keystore`` is one PEM file holding the broker's private key (PKCS#8, not encrypted) and its
    certificate chain. ``users`` may log in with PLAIN or SCRAM-SHA-512.
    """

    keystore: Path
    users: dict[str, str]

    MECHANISMS = ("PLAIN", "SCRAM-SHA-512")

    def properties(self) -> dict[str, str]:
        """The broker settings of the listener named ``SECURE``."""
        plain_users = " ".join(f'user_{name}="{password}"' for name, password in self.users.items())
        return {
            "sasl.enabled.mechanisms": ",".join(self.MECHANISMS),
            "listener.name.secure.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ),
            "listener.name.secure.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "listener.name.secure.ssl.keystore.type": "PEM",
            "listener.name.secure.ssl.keystore.location": str(self.keystore),
        }

    def scram_arguments(self) -> list[str]:
        """``StorageTool format`` arguments that create the SCRAM credentials."""
        args = []
        for name, password in self.users.items():
            args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return args


class LocalBroker:
    """A single-node KRaft broker process on 127.0.0.1; use as a context manager.

    With ``secure``, clients connect to ``port`` over SASL_SSL; the broker talks to itself on a
    PLAINTEXT port of its own.
    """

    def __init__(
        self,
        port: int | None = None,
        cache_dir: Path = DEFAULT_CACHE,
        data_dir: Path | None = None,
        secure: SecureListener | None = None,
    ):
        self.port = port or free_port()
        self.controller_port = free_port()
        self.secure = secure
        self.internal_port = free_port() if secure else self.port
        self.cache_dir = cache_dir
        self._own_data_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="trainwire-kafka-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        listeners = {"PLAINTEXT": self.internal_port}
        protocols = {"CONTROLLER": "PLAINTEXT", "PLAINTEXT": "PLAINTEXT"}
        if self.secure:
            listeners["SECURE"] = self.port
            protocols["SECURE"] = "SASL_SSL"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": ",".join(
                [f"{name}://127.0.0.1:{port}" for name, port in listeners.items()]
                + [f"CONTROLLER://127.0.0.1:{self.controller_port}"]
            ),
            "advertised.listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items()),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{name}:{protocol}" for name, protocol in protocols.items()),
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.flush.interval.messages": "10000",
            **(self.secure.properties() if self.secure else {}),
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.xml").write_text(LOG4J2_CONFIG)
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        libs = fetch(self.cache_dir)
        return [
            shutil.which("java") or "java",
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def start(self, timeout: float = 90.0) -> LocalBroker:
        """Format storage (first time), start the broker, and wait until it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = "-"
            while cluster_id.startswith("-"):  # StorageTool would read a leading '-' as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                    *(self.secure.scram_arguments() if self.secure else []),
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        log = open(self.data_dir / "broker.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(config)), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Kafka broker exited with {self.process.returncode}; see {self.data_dir}/broker.log"
                )
            if port_open(self.port) and port_open(self.internal_port):
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"Kafka broker did not open port {self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the broker process (SIGTERM, then SIGKILL) and remove a temporary data dir."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9092, help="client port on 127.0.0.1 (default 9092)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the jars are kept")
    parser.add_argument("--data-dir", type=Path, default=None, help="broker storage (default: a temp dir)")
    parser.add_argument("--fetch-only", action="store_true", help="download the jars and exit")
    args = parser.parse_args(argv)
    if args.fetch_only:
        print(fetch(args.cache_dir))
        return 0
    broker = LocalBroker(args.port, args.cache_dir, args.data_dir).start()
    print(f"Kafka broker ready on {broker.bootstrap} (data in {broker.data_dir}); Ctrl+C stops it", flush=True)
    try:
        assert broker.process is not None
        broker.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
