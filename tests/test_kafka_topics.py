"""Topics on the real broker when training starts before ``trainwire topics create``.

The session broker creates a topic that something publishes to (``auto.create.topics.enable``)
with one partition, as a broker left at its defaults does.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from test_faust_worker import emit

from trainwire.bus.admin import DEFAULT_PARTITIONS, ensure_topics
from trainwire.config import Settings
from trainwire.errors import ConfigError
from trainwire.events import Event, Interaction
from trainwire.topics import all_topics, event_topics, topic_name


async def partition_counts(settings: Settings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        described = await admin.describe_topics(all_topics(settings.topic_prefix))
    finally:
        await admin.close()
    return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}


def test_training_before_topics_create_makes_every_topic_with_the_workers_count(kafka_settings: Settings) -> None:
    emit(kafka_settings, [Event("run-1", Interaction(prompt="2+2?", completion="4", reward=1.0))])
    counts = asyncio.run(partition_counts(kafka_settings))
    assert counts == dict.fromkeys(all_topics(kafka_settings.topic_prefix), DEFAULT_PARTITIONS)
    assert asyncio.run(ensure_topics(kafka_settings, 4)) == DEFAULT_PARTITIONS  # what the worker runs on


def test_missing_event_topics_get_the_count_of_those_that_exist(kafka_settings: Settings) -> None:
    async def publish_raw() -> None:  # a producer that is not trainwire's: the broker creates the topic
        producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(topic_name(kafka_settings.topic_prefix, "interactions"), b"{}")
        finally:
            await producer.stop()

    asyncio.run(publish_raw())
    assert asyncio.run(ensure_topics(kafka_settings, 4)) == 1
    counts = asyncio.run(partition_counts(kafka_settings))
    assert {counts[t] for t in event_topics(kafka_settings.topic_prefix)} == {1}


def test_a_worker_on_topics_of_different_counts_says_why_and_what_to_do(kafka_settings: Settings) -> None:
    prefix = kafka_settings.topic_prefix
    interactions = topic_name(prefix, "interactions")

    async def make_topics() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(interactions, b"{}")  # auto-created: 1 partition
        finally:
            await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.kafka)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, 4, 1) for t in all_topics(prefix) if t != interactions])
        finally:
            await admin.close()

    asyncio.run(make_topics())
    with pytest.raises(ConfigError) as caught:
        asyncio.run(ensure_topics(kafka_settings, 4))
    message = str(caught.value)
    assert f"{interactions} has 1, the others 4" in message
    assert "created by the broker" in message and "producers now create missing topics" in message
    assert "--partitions 4" in message
