"""Kafka administration: trainwire's topics, their partitions, a consumer group's offsets.

The event topics must all have one partition count (a run's events share a partition number in
each, see :mod:`trainwire.runtime.faust_app`). A broker with ``auto.create.topics.enable`` (the
default) creates a topic that something publishes to with its own default count, often 1, so
trainwire's producers create the missing topics themselves before they publish (see
:func:`create_topics`), with the count of the event topics that exist, or
:data:`DEFAULT_PARTITIONS`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from trainwire.bus.kafka import unreachable
from trainwire.config import Settings
from trainwire.errors import BusError, ConfigError
from trainwire.topics import all_topics, event_topics

logger = logging.getLogger("trainwire.bus")

DEFAULT_PARTITIONS = 6
"""Partitions of each topic trainwire creates when no count is given and no event topic exists yet."""


@asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client for ``settings``' Kafka (:class:`BusError` when unreachable), closed after."""
    options = settings.kafka_client_options()
    admin = AIOKafkaAdminClient(**options)
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        raise await unreachable(options, exc) from exc
    try:
        yield admin
    finally:
        await admin.close()


async def create_topics(
    settings: Settings, *, partitions: int = DEFAULT_PARTITIONS, replication: int = 1, names: list[str] | None = None
) -> dict[str, str]:
    """Create ``names`` (default: every trainwire topic); returns ``{topic: "created" | "exists"}``.

    A missing event topic gets ``partitions``, or the partition count of the event topics that
    exist already, so that they all keep one count.
    """
    names = names or all_topics(settings.topic_prefix)
    events = set(event_topics(settings.topic_prefix))
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        result = {n: "exists" for n in names if n in existing}
        if missing:
            present = sorted(events & existing)
            if present and events & set(missing):
                (described,) = await admin.describe_topics(present[:1])
                event_partitions = len(described["partitions"])
                if event_partitions != partitions:
                    logger.warning(
                        "trainwire: creating the missing event topics with %d partitions, as %s has, not %d",
                        event_partitions,
                        present[0],
                        partitions,
                    )
            else:
                event_partitions = partitions
            new = [
                NewTopic(
                    n, num_partitions=event_partitions if n in events else partitions, replication_factor=replication
                )
                for n in missing
            ]
            try:
                response = await admin.create_topics(new)
            except KafkaError as exc:
                raise BusError(f"cannot create topics {missing}: {exc}") from exc
            for topic, code, *_ in response.topic_errors:
                if code and code != TopicAlreadyExistsError.errno:  # created meanwhile, by another process say
                    raise BusError(f"cannot create topic {topic}: {for_code(code).__name__}")
                result[topic] = "exists" if code else "created"
        return result


async def topic_partitions(settings: Settings) -> int:
    """The partition count of the event topics (raise if they differ or are missing)."""
    names = event_topics(settings.topic_prefix)
    async with admin_client(settings) as admin:
        described = await admin.describe_topics(names)
    counts = {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code", 0) == 0}
    missing = [n for n in names if not counts.get(n)]
    if missing:
        raise BusError(f"event topics missing: {', '.join(missing)} (run `trainwire topics create`)")
    if len(set(counts.values())) != 1:
        raise ConfigError("partitions", _mismatch(counts))
    return next(iter(counts.values()))


def _mismatch(counts: dict[str, int]) -> str:
    """Why a worker cannot run on event topics of ``counts`` partitions, and how to repair them."""
    usual = max(set(counts.values()), key=list(counts.values()).count)
    odd = ", ".join(f"{topic} has {n}" for topic, n in sorted(counts.items()) if n != usual)
    return (
        f"the event topics must have one partition count: {odd}, the others {usual}. A topic with the "
        "broker's default count was most likely created by the broker when something published to it "
        "before `trainwire topics create` (auto.create.topics.enable): trainwire's producers now create "
        f"missing topics first, with the event topics' count. Repair: add partitions "
        f"(kafka-topics.sh --alter --topic TOPIC --partitions {usual}; the records already there keep "
        "their partition), or delete the odd topic if its records are not needed"
    )


CREATED_TOPICS_WAIT_S = 10.0
"""How long topics just created may take to show in the broker's metadata."""


async def ensure_topics(settings: Settings, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Create the trainwire topics that are missing (see :func:`create_topics`); return the event topics' count."""
    created = await create_topics(settings, partitions=partitions, names=all_topics(settings.topic_prefix))
    deadline = time.monotonic() + (CREATED_TOPICS_WAIT_S if "created" in created.values() else 0.0)
    while True:
        try:
            return await topic_partitions(settings)
        except BusError:  # "missing": a topic created a moment ago may not be in the metadata yet
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)
