"""Shared fixtures: real services started once per session, factories for isolated settings.

- ``kafka_broker``: a real single-node Apache Kafka (KRaft) from ``infra/kafka/local_broker.py``,
  fetched from Maven Central on first use and started once per test session.
- ``embedded_settings``: settings for the embedded bus and chdb in a fresh temp data dir.
- ``kafka_settings``: settings for the session broker with a topic prefix of its own, so
  tests never see each other's topics or consumer groups.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import pytest

from trainwire.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def load_local_broker_module():
    """Import ``infra/kafka/local_broker.py`` (a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("local_broker", ROOT / "infra" / "kafka" / "local_broker.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_broker"] = module
    spec.loader.exec_module(module)
    return module


local_broker = load_local_broker_module()


@pytest.fixture(scope="session")
def kafka_broker():
    """A real Kafka broker on 127.0.0.1 for the whole test session."""
    with local_broker.LocalBroker() as broker:
        yield broker


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Settings:
    """Embedded bus and chdb in a fresh data directory."""
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def kafka_settings(kafka_broker, tmp_path: Path) -> Settings:
    """The session broker, with topics and groups of this test's own (unique prefix)."""
    return Settings(kafka=kafka_broker.bootstrap, data_dir=tmp_path / "data", topic_prefix=f"t{uuid.uuid4().hex[:10]}")
