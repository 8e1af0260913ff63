"""Runtimes: the loops that read the bus and drive stages and sinks.

:func:`build_pipeline` assembles the embedded runtime from :class:`WorkerOptions`;
:func:`run_worker` runs it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trainwire.bus import make_transport, open_consumer
from trainwire.bus.publisher import Publisher
from trainwire.config import Settings
from trainwire.processors.dataset import DatasetConfig
from trainwire.processors.health import HealthConfig
from trainwire.processors.stats import StatsConfig
from trainwire.runtime.pipeline import Pipeline, WorkerCore
from trainwire.runtime.stages import DatasetStage, MonitorStage, Stage, StateStore
from trainwire.sinks.alert_console import AlertConsole
from trainwire.sinks.alert_webhook import AlertDelivery, AlertOutbox, AlertWebhookSink, DeliveryConfig, Webhook
from trainwire.sinks.base import Sink
from trainwire.sinks.clickhouse import ClickHouseSink
from trainwire.sinks.dead_letter import DeadLetters
from trainwire.topics import event_topics

if TYPE_CHECKING:
    from trainwire.store.clickhouse import Store

__all__ = ["Pipeline", "WorkerCore", "WorkerOptions", "build_core", "build_pipeline", "build_stages", "run_worker"]


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker does: store events, monitor (stats and alerts), write fine-tuning data, post alerts."""

    group: str = "trainwire-worker"
    store: bool = True
    monitor: bool = True
    stats: StatsConfig = field(default_factory=StatsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    dataset_output: Path | None = None
    dataset_format: str = "alpaca"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    alert_webhooks: tuple[Webhook, ...] = ()
    alert_delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    def replace(self, **changes: object) -> WorkerOptions:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def build_core(settings: Settings, store: Store | None, options: WorkerOptions) -> WorkerCore:
    """The runtime-independent part of a worker: its sinks, publisher and dead letters."""
    publisher = Publisher(make_transport(settings), settings.data_dir)
    dead_letters = DeadLetters(publisher, settings.topic_prefix)
    sinks: list[Sink] = [ClickHouseSink(store, dead_letters)] if options.store and store is not None else []
    sinks.append(AlertConsole(settings.data_dir))  # each alert logged once per data directory
    if options.alert_webhooks:  # after ClickHouse: an alert is posted once it is stored
        outbox = AlertOutbox(settings.data_dir, options.alert_webhooks)
        delivery = AlertDelivery(options.alert_webhooks, options.alert_delivery, outbox.settle)
        sinks.append(AlertWebhookSink(delivery, outbox))
    return WorkerCore(sinks, publisher, dead_letters, settings.topic_prefix)


def build_stages(options: WorkerOptions, dataset_output: Path | None = None) -> list[Stage]:
    """The stages ``options`` asks for; the dataset files go to ``dataset_output`` when given."""
    stages: list[Stage] = []
    if options.monitor:
        stages.append(MonitorStage(options.stats, options.health))
    output = dataset_output or options.dataset_output
    if output is not None:
        stages.append(DatasetStage(output, options.dataset_format, options.dataset))
    return stages


def build_pipeline(settings: Settings, store: Store | None, options: WorkerOptions | None = None) -> Pipeline:
    """The embedded runtime for ``options``, reading every event topic as group ``options.group``."""
    options = options or WorkerOptions()
    consumer = open_consumer(settings, event_topics(settings.topic_prefix), options.group)
    state = StateStore(Path(settings.data_dir) / "state" / options.group)
    return Pipeline(consumer, build_core(settings, store, options), stages=build_stages(options), state=state)


def run_worker(
    settings: Settings,
    store: Store | None,
    options: WorkerOptions | None = None,
    idle_exit_s: float | None = None,
    flush_interval_s: float = 0.5,
    on_start: Callable[[WorkerCore], None] | None = None,
) -> Pipeline:
    """Run :func:`build_pipeline` until SIGINT/SIGTERM (or idle for ``idle_exit_s``); return it.

    ``on_start`` is given the worker's core (its counters) before it starts consuming.
    """
    pipeline = build_pipeline(settings, store, options)
    pipeline.flush_interval_s = flush_interval_s
    if on_start is not None:
        on_start(pipeline.core)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await pipeline.run(stop, idle_exit_s=idle_exit_s)

    asyncio.run(main())
    return pipeline
