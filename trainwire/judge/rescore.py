"""Rescoring: judge stored interactions again with another judge configuration.

``trainwire judge rescore --runs 'grpo-*' --template strict.txt [--model M] [--mode group]``
reads the runs' interactions, passes them through the :class:`~trainwire.judge.trigger.JudgeTrigger`
(the same filters as ``judge run``), grades them with the new configuration and publishes the
``judge_request`` and ``judge_score`` events, which ``trainwire worker`` stores.

Where the interactions come from:

- ``store`` (the default): ClickHouse's ``interactions`` table, run by run, a page at a time in
  step order (:func:`interactions_from_store`);
- ``bus``: the interactions topic replayed from its earliest offset through a fresh consumer
  group of its own, until it has been idle for a while (:class:`BusReplay`), for
  interactions the store does not keep.

Old scores stay: a score's event id derives from its request and the judge's ``config_id``
(model, template text, mode, parser, sampling), so the new scores are rows of their own beside
the old ones, told apart by their provenance columns, and rescoring again with the same
configuration adds no row. The judge cache keys on the same configuration, so that second run
costs no call, and a rescore pays only for what changed. In group mode the interactions are
gathered into GRPO groups as the judge worker gathers them
(:class:`~trainwire.judge.grouping.GroupCollector`: a group is complete when the run moves to a
later step, or at the end).
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from trainwire.bus import Emitter, open_consumer
from trainwire.config import Settings
from trainwire.errors import EventError
from trainwire.events import Event, Interaction, JudgeScore, decode
from trainwire.judge.client import Judge
from trainwire.judge.grouping import GroupCollector, Member
from trainwire.judge.trigger import JudgeTrigger
from trainwire.judge.worker import score_event
from trainwire.store.clickhouse import Store
from trainwire.topics import event_topic

__all__ = ["SOURCES", "BusReplay", "RescoreResult", "interactions_from_store", "rescore"]

SOURCES = ("store", "bus")
"""Where a rescore reads the interactions: ClickHouse, or the interactions topic from its earliest offset."""
PAGE = 2000
"""Interactions read from the store, and judged, at a time."""

_PAGE_SQL = """
SELECT event_id, run_id, ts, prompt, prompt_messages, completion, reward, rewards, success, error, step,
       group_id, group_index, model, metadata
FROM interactions FINAL
WHERE run_id = {run:String}
    AND (ifNull(step, -1), ts, event_id) > ({step:Int64}, {ts:DateTime64(6, 'UTC')}, {after:String})
ORDER BY ifNull(step, -1), ts, event_id
LIMIT {limit:UInt32}
"""


@dataclass
class RescoreResult:
    """What a rescore did."""

    interactions: int = 0
    """Interactions read (of the selected runs)."""
    requests: int = 0
    """Of those, sent to the judge (the trigger's filters passed)."""
    scores: int = 0
    failed: int = 0
    """Scores that are failed judgements."""


def matching_runs(store: Store, runs: Sequence[str]) -> list[str]:
    """The stored runs whose id matches one of the ``runs`` globs."""
    stored = [row["run_id"] for row in store.query_rows("SELECT DISTINCT run_id FROM interactions ORDER BY run_id")]
    return [run for run in stored if any(fnmatch.fnmatchcase(run, pattern) for pattern in runs)]


def interactions_from_store(store: Store, runs: Sequence[str], page: int = PAGE) -> Iterator[list[Event]]:
    """The stored interactions of the runs matching ``runs`` (globs), run by run in step order, ``page`` at a time."""
    for run in matching_runs(store, runs):
        step, ts, after = -2, "1900-01-01 00:00:00", ""
        while True:
            params = {"run": run, "step": step, "ts": ts, "after": after, "limit": page}
            rows = store.query_rows(_PAGE_SQL, params)
            if not rows:
                break
            yield [_interaction_event(row) for row in rows]
            last = rows[-1]
            step = -1 if last["step"] is None else last["step"]
            ts, after = last["ts"].strftime("%Y-%m-%d %H:%M:%S.%f"), last["event_id"]


def _interaction_event(row: dict[str, Any]) -> Event:
    """An interaction event as it was published, from its ``interactions`` row."""
    prompt: Any = orjson.loads(row["prompt_messages"]) if row["prompt_messages"] else row["prompt"]
    payload = Interaction(
        prompt=prompt,
        completion=row["completion"],
        reward=row["reward"],
        rewards=dict(row["rewards"]),
        success=bool(row["success"]),
        error=row["error"],
        model=row["model"],
        step=row["step"],
        group_id=row["group_id"],
        group_index=row["group_index"],
        metadata=orjson.loads(row["metadata"]) if row["metadata"] else {},
    )
    return Event(run_id=row["run_id"], payload=payload, event_id=row["event_id"], ts=row["ts"])


class BusReplay:
    """The interactions topic from its earliest offset, through a fresh consumer group, until idle for ``idle_s``.

    Until the first record arrives it waits up to ``start_s`` (joining a Kafka group can take a few
    seconds: the broker's initial rebalance delay), then stops once ``idle_s`` pass without one.

    An async iterator of pages of events. The group (``trainwire-rescore-<random>``) is new each
    time, so no other group's position moves, and it never commits. A record that does not decode
    is not judged; its location and reason are kept in :attr:`undecodable` (the store worker
    dead-letters such records too).
    """

    def __init__(self, settings: Settings, idle_s: float = 3.0, page: int = PAGE, start_s: float = 30.0):
        self.settings = settings
        self.idle_s = idle_s
        self.start_s = max(start_s, idle_s)
        self.page = page
        self.undecodable: list[str] = []
        """Why each record that did not decode did not, with its ``topic[partition]@offset``."""

    async def __aiter__(self) -> AsyncIterator[list[Event]]:
        topic = event_topic(self.settings.topic_prefix, "interaction")
        consumer = open_consumer(self.settings, [topic], f"trainwire-rescore-{uuid.uuid4().hex[:12]}")
        await consumer.start()
        try:
            last, wait = time.monotonic(), self.start_s
            while time.monotonic() - last < wait:
                records = await consumer.getmany(timeout_ms=500, max_records=self.page)
                if records:
                    last, wait = time.monotonic(), self.idle_s
                    yield self._decode(records)
        finally:
            await consumer.stop()

    def _decode(self, records: list[Any]) -> list[Event]:
        events = []
        for record in records:
            try:
                events.append(decode(record.value, record.location))
            except EventError as exc:
                self.undecodable.append(str(exc))
        return events


async def rescore(
    judge: Judge,
    pages: AsyncIterable[list[Event]] | Iterator[list[Event]],
    trigger: JudgeTrigger,
    emitter: Emitter,
) -> RescoreResult:
    """Judge the interactions of ``pages`` that pass ``trigger`` with ``judge``; publish requests and scores.

    Single mode judges each page concurrently; group mode gathers GRPO groups across pages
    (complete when their run moves to a later step, or at the end) and judges each in one call.
    """
    result = RescoreResult()
    groups = GroupCollector(wait_s=float("inf")) if judge.config.mode == "group" else None

    def publish(answered: list[tuple[Event, JudgeScore]]) -> None:
        for request, score in answered:
            emitter.emit(score_event(request, score))
            result.scores += 1
            result.failed += not score.success

    async for page in _pages(pages):
        result.interactions += sum(isinstance(e.payload, Interaction) for e in page)
        requests = [request for event in page for request in trigger.process(event)]
        for request in requests:
            emitter.emit(request)
        result.requests += len(requests)
        if groups is None:
            scores = await judge.judge_many([r.payload for r in requests])  # type: ignore[misc]
            publish(list(zip(requests, scores, strict=True)))
        else:
            publish(await _judge_groups(judge, [g for r in requests for g in groups.add(None, r, now=0.0)]))
    if groups is not None:
        publish(await _judge_groups(judge, groups.drain()))
    return result


async def _judge_groups(judge: Judge, groups: list[list[Member]]) -> list[tuple[Event, JudgeScore]]:
    """Each group's requests with their scores, the groups judged concurrently."""
    judged = await asyncio.gather(*(judge.judge_group([e.payload for _, e in group]) for group in groups))
    return [
        (event, score)
        for group, scores in zip(groups, judged, strict=True)
        for (_, event), score in zip(group, scores, strict=True)
    ]


async def _pages(pages: AsyncIterable[list[Event]] | Iterator[list[Event]]) -> AsyncIterator[list[Event]]:
    """Pages from a sync iterator (the store, read in a thread) or an async iterable (the bus)."""
    if isinstance(pages, AsyncIterable):
        async for page in pages:
            yield page
        return
    done = object()
    while (page := await asyncio.to_thread(next, pages, done)) is not done:
        yield page  # type: ignore[misc]
