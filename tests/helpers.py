"""Small helpers shared by tests (no fixtures here; see conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from trainwire.bus import open_consumer
from trainwire.config import Settings
from trainwire.events import Event, decode
from trainwire.runtime.pipeline import Pipeline
from trainwire.topics import event_topics


def read_events(settings: Settings, group: str = "test-reader", expected: int | None = None, timeout: float = 30.0):
    """Every event on the bus's event topics (as a fresh consumer group), decoded."""

    async def main() -> list[Event]:
        consumer = open_consumer(settings, event_topics(settings.topic_prefix), group)
        await consumer.start()
        out: list[Event] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                records = await consumer.getmany(timeout_ms=500)
                out.extend(decode(r.value, r.location) for r in records)
                if expected is None and not records and out:
                    break
                if expected is not None and len(out) >= expected:
                    break
            await consumer.commit()
        finally:
            await consumer.stop()
        return out

    return asyncio.run(main())


def run_pipeline_until(pipeline: Pipeline, done: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run ``pipeline`` until ``done()`` holds (checked every 100 ms) or ``timeout`` passes."""

    async def main() -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            deadline = time.monotonic() + timeout
            while not done() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            stop.set()

        watcher = asyncio.create_task(watch())
        await pipeline.run(stop)
        await watcher

    asyncio.run(main())
