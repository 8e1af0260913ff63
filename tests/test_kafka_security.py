"""Kafka security settings on a real broker whose client port speaks only SASL_SSL.

The broker (``infra/kafka/local_broker.py`` with a :class:`SecureListener`) has a TLS certificate
signed by a CA made here, and one SASL user who may log in with PLAIN or SCRAM-SHA-512. Every
client trainwire builds (the admin client behind ``trainwire topics create``, the emitter, the
consumer, the faust worker) must reach it with the settings alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import local_broker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import read_events
from test_faust_worker import emit, event_ids, start_worker, stop, training_events

from trainwire.bus import Emitter
from trainwire.bus.admin import ensure_topics
from trainwire.cli import main
from trainwire.config import Secret, Settings
from trainwire.events import Event, Interaction

USER, PASSWORD = "trainer", "s3cret-pw"


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA (its certificate: the clients' ``ssl_cafile``) and a broker keystore it signed, for 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)

    def certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, broker_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("trainwire test CA", ca_key, "trainwire test CA", ca_key, ca=True)
    broker_cert = certificate("127.0.0.1", broker_key, "trainwire test CA", ca_key, ca=False)
    ca_file, keystore = directory / "ca.pem", directory / "broker-keystore.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    keystore.write_bytes(
        broker_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + broker_cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return ca_file, keystore


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    """A broker whose only client port is SASL_SSL, and the CA file that verifies it."""
    ca_file, keystore = make_certificates(tmp_path_factory.mktemp("certs"))
    with local_broker.LocalBroker(secure=local_broker.SecureListener(keystore, {USER: PASSWORD})) as broker:
        yield broker, ca_file


def secure_settings(secure_broker, tmp_path: Path, mechanism: str, password: str = PASSWORD) -> Settings:
    broker, ca_file = secure_broker
    return Settings(
        kafka=broker.bootstrap,
        data_dir=tmp_path / "data",
        topic_prefix=f"s{uuid.uuid4().hex[:10]}",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=USER,
        kafka_sasl_password=Secret(password),
        kafka_ssl_cafile=str(ca_file),
    )


@pytest.mark.parametrize("mechanism", local_broker.SecureListener.MECHANISMS)
def test_topics_emitter_and_consumer_over_sasl_ssl(secure_broker, tmp_path: Path, mechanism: str) -> None:
    settings = secure_settings(secure_broker, tmp_path, mechanism)
    asyncio.run(ensure_topics(settings, partitions=2))
    events = [Event("run-secure", Interaction(prompt=f"q{i}", completion=f"a{i}", reward=i / 10)) for i in range(50)]
    emit(settings, events)
    received = read_events(settings, group="secure-reader", expected=50)
    assert sorted(e.event_id for e in received) == sorted(e.event_id for e in events)


def test_the_cli_reaches_the_broker_with_security_from_the_environment(secure_broker, tmp_path: Path) -> None:
    broker, ca_file = secure_broker
    env = {
        "TRAINWIRE_KAFKA": broker.bootstrap,
        "TRAINWIRE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TRAINWIRE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TRAINWIRE_KAFKA_SASL_USERNAME": USER,
        "TRAINWIRE_KAFKA_SASL_PASSWORD": PASSWORD,
        "TRAINWIRE_KAFKA_SSL_CAFILE": str(ca_file),
        "TRAINWIRE_TOPIC_PREFIX": "cli-secure",
    }
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "topics", "create", "--partitions", "2"], env=env)
    assert result.exit_code == 0, result.output
    assert "cli-secure.interactions" in result.output

    wrong = CliRunner().invoke(
        main,
        ["--data-dir", str(tmp_path), "topics", "create"],
        env={**env, "TRAINWIRE_KAFKA_SASL_PASSWORD": "not-the-pw-7"},
    )
    assert wrong.exit_code != 0
    assert "refused the login" in wrong.output and "invalid credentials" in wrong.output, wrong.output
    assert "Traceback" not in wrong.output
    assert "not-the-pw-7" not in wrong.output and PASSWORD not in wrong.output  # passwords are never printed

    untrusted = CliRunner().invoke(  # without the CA file the broker's certificate is not trusted
        main, ["--data-dir", str(tmp_path), "topics", "create"], env={**env, "TRAINWIRE_KAFKA_SSL_CAFILE": None}
    )
    assert untrusted.exit_code != 0
    assert "TLS failed" in untrusted.output and "certificate verify failed" in untrusted.output, untrusted.output

    plaintext = CliRunner().invoke(
        main, ["--data-dir", str(tmp_path), "topics", "create"], env={"TRAINWIRE_KAFKA": broker.bootstrap}
    )
    assert plaintext.exit_code != 0
    assert "TRAINWIRE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT?" in plaintext.output, plaintext.output


def test_a_wrong_password_spools_events_instead_of_losing_them(secure_broker, tmp_path: Path) -> None:
    settings = secure_settings(secure_broker, tmp_path, "PLAIN", password="not-the-password")
    emitter = Emitter(settings)
    try:
        for i in range(20):
            emitter.emit(Event("run-denied", Interaction(prompt=f"q{i}", completion="a")))
        deadline = time.monotonic() + 30
        while emitter.stats().spooled < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        stats = emitter.stats()
    finally:
        emitter.close(timeout=5)
    assert stats.spooled == 20 and stats.sent == 0


def test_the_faust_worker_over_sasl_ssl(secure_broker, tmp_path: Path) -> None:
    settings = secure_settings(secure_broker, tmp_path, "SCRAM-SHA-512")
    asyncio.run(ensure_topics(settings, partitions=4))
    events = training_events(runs=2, steps=3)
    emit(settings, events)
    _, ca_file = secure_broker
    env = {
        "TRAINWIRE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TRAINWIRE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TRAINWIRE_KAFKA_SASL_USERNAME": USER,
        "TRAINWIRE_KAFKA_SASL_PASSWORD": PASSWORD,
        "TRAINWIRE_KAFKA_SSL_CAFILE": str(ca_file),
    }
    data_dir = tmp_path / "worker"
    worker = start_worker(settings, data_dir, "secure-workers", env=env)
    log = data_dir.parent / "worker.log"
    count, deadline = 0, time.monotonic() + 120
    while count < len(events) and time.monotonic() < deadline:
        assert worker.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
        if (data_dir / "clickhouse.owner.json").exists():
            count = event_ids(data_dir)[1]
    stop(worker)
    ids, count = event_ids(data_dir)
    assert count == len(events), log.read_text()[-3000:]
    assert ids == {e.event_id for e in events}
