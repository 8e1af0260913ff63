"""A Kafka broker for the benchmarks (shared by the scripts in bench/)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def kafka_bootstrap(kafka: str | None) -> Iterator[str]:
    """``kafka`` when given; otherwise a broker from ``infra/kafka/local_broker.py`` on a free port, stopped after."""
    if kafka is not None:
        yield kafka
        return
    spec = importlib.util.spec_from_file_location("local_broker", ROOT / "infra" / "kafka" / "local_broker.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_broker"] = module
    spec.loader.exec_module(module)
    broker = module.LocalBroker().start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
