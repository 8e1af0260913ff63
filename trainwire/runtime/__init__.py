"""Runtimes: the loops that read the bus and drive processors and sinks."""

from __future__ import annotations

import asyncio
import signal

from trainwire.bus import make_transport, open_consumer
from trainwire.config import Settings
from trainwire.runtime.pipeline import Pipeline
from trainwire.sinks.clickhouse import ClickHouseSink
from trainwire.sinks.dead_letter import DeadLetters
from trainwire.store.clickhouse import Store
from trainwire.topics import event_topics

__all__ = ["Pipeline", "run_store_worker", "store_pipeline"]


def store_pipeline(settings: Settings, store: Store, group: str = "trainwire-clickhouse") -> Pipeline:
    """A pipeline that stores every event topic in ``store`` as consumer group ``group``."""
    dead_letters = DeadLetters(make_transport(settings), settings.topic_prefix)
    consumer = open_consumer(settings, event_topics(settings.topic_prefix), group)
    return Pipeline(consumer, [ClickHouseSink(store, dead_letters)], dead_letters)


def run_store_worker(settings: Settings, store: Store, group: str, idle_exit_s: float | None = None) -> Pipeline:
    """Run :func:`store_pipeline` until SIGINT/SIGTERM (or idle for ``idle_exit_s``); return it."""
    pipeline = store_pipeline(settings, store, group)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await pipeline.run(stop, idle_exit_s=idle_exit_s)

    asyncio.run(main())
    return pipeline
