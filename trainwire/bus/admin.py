"""Kafka administration: trainwire's topics, their partitions, a consumer group's offsets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from trainwire.bus.kafka import unreachable
from trainwire.config import Settings
from trainwire.errors import BusError, ConfigError
from trainwire.topics import all_topics, event_topics


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
    settings: Settings, *, partitions: int = 6, replication: int = 1, names: list[str] | None = None
) -> dict[str, str]:
    """Create ``names`` (default: every trainwire topic); returns ``{topic: "created" | "exists"}``."""
    names = names or all_topics(settings.topic_prefix)
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        result = {n: "exists" for n in names if n in existing}
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                raise BusError(f"cannot create topics {missing}: {exc}") from exc
            result.update(dict.fromkeys(missing, "created"))
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
        raise ConfigError("partitions", f"the event topics must have one partition count, got {counts}")
    return next(iter(counts.values()))


async def ensure_topics(settings: Settings, partitions: int = 6) -> int:
    """Create the trainwire topics that are missing (``partitions`` each); return the event topics' count."""
    await create_topics(settings, partitions=partitions, names=all_topics(settings.topic_prefix))
    return await topic_partitions(settings)
