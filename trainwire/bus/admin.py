"""Kafka administration: creating trainwire's topics."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from trainwire.config import Settings
from trainwire.errors import BusError
from trainwire.topics import all_topics


async def create_topics(
    settings: Settings, *, partitions: int = 6, replication: int = 1, names: list[str] | None = None
) -> dict[str, str]:
    """Create ``names`` (default: every trainwire topic); returns ``{topic: "created" | "exists"}``."""
    names = names or all_topics(settings.topic_prefix)
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        raise BusError(f"Kafka at {settings.kafka} is unreachable: {exc}") from exc
    try:
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
    finally:
        await admin.close()
