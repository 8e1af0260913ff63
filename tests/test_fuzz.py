"""Fuzzed input for the three places where outside data enters trainwire: ``decode``, the importers
and a worker's record path (decode, stages, the ClickHouse sink on chdb).

Each property holds for every input: nothing but :class:`~trainwire.errors.EventError` escapes
``decode``, and what it accepts a producer could have made and ClickHouse's columns hold; an import
never raises, and each line is imported (and then decodes and converts to ClickHouse's columns),
skipped or reported; a worker never raises, and each record is stored or dead-lettered. Inputs are
valid events and log records with values swapped for odd ones (integers past 64 bits, non-finite
floats, lone surrogates, times at the ends of the calendar, nesting past what orjson reads), and
random bytes. The example counts keep the whole file within about 30 s on two cores.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainwire.bus import Emitter, open_consumer
from trainwire.bus.base import Record
from trainwire.config import Settings
from trainwire.errors import EventError
from trainwire.events import (
    Alert,
    Event,
    Interaction,
    JudgeScore,
    Logits,
    TrainStep,
    check_event,
    decode,
    encode,
    new_event_id,
)
from trainwire.producers.importers import Importer
from trainwire.runtime import WorkerOptions, build_core, build_stages
from trainwire.runtime.pipeline import StageSet
from trainwire.store.clickhouse import open_store
from trainwire.store.schema import events_to_arrow, table_for
from trainwire.topics import DEAD_LETTER, event_topic, event_topics, topic_name

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --------------------------------------------------------------------------- odd JSON values


@dataclass(frozen=True)
class Deep:
    """Objects or lists nested ``levels`` deep, written as raw JSON text (past what json.dumps writes)."""

    levels: int
    bracket: str

    def text(self) -> str:
        if self.bracket == "[":
            return "[" * self.levels + "]" * self.levels
        return '{"k": ' * (self.levels - 1) + "{}" + "}" * (self.levels - 1)


DELETE = object()
"""A mutation that removes the field."""

odd_ints = st.one_of(
    st.integers(),
    st.sampled_from([2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**400]),
)
odd_floats = st.floats(allow_nan=True, allow_infinity=True)
odd_texts = st.text(st.characters(exclude_categories=[]), max_size=12)  # lone surrogates too
offsets = st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)))
odd_times = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59), timezones=st.none() | st.just(UTC) | offsets
).map(datetime.isoformat)
deep = st.builds(Deep, st.sampled_from([1, 5, 252, 253, 300, 1022, 1030, 5000]), st.sampled_from("[{"))
scalars = st.none() | st.booleans() | odd_ints | odd_floats | odd_texts | odd_times
json_values = st.recursive(
    scalars | deep,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(odd_texts, children, max_size=3),
    max_leaves=6,
)


def dump(value: Any) -> str:
    """JSON text of ``value`` as json.dumps writes it (NaN, big integers, escaped surrogates); :class:`Deep` raw."""
    if isinstance(value, Deep):
        return value.text()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    return json.dumps(value)


# --------------------------------------------------------------------------- mutated events

SAMPLES = [
    Event(
        "run",
        Interaction(
            prompt=[{"role": "user", "content": "2+2?"}],
            completion="4",
            reward=1.0,
            rewards={"acc": 1.0},
            prompt_tokens=3,
            step=7,
            group_index=1,
            metadata={"level": 2, "tags": ["a"]},
        ),
    ),
    Event("run", TrainStep(step=3, loss=0.5, metrics={"kl": 0.1})),
    Event("run", JudgeScore(interaction_id="i", judge_model="m", template_version="v1", score=4.0, step=3)),
    Event("run", Logits(model="m", sample_id="s", position=0, target_token="t", logit=1.0, probability=0.5, rank=1)),
    Event("run", Alert(rule="r", severity="warning", message="m", step=2, evidence={"x": [1.0]})),
]


def _paths(sample: Event) -> list[tuple[str, ...]]:
    obj = orjson.loads(encode(sample))
    paths = [(k,) for k in obj if k not in ("source", "payload")]
    paths += [("source", k) for k in obj["source"]] + [("payload", k) for k in obj["payload"]]
    return [*paths, ("payload", "surprise"), ("source",), ("payload",)]


mutation = st.tuples(st.integers(0, 99), json_values | st.just(DELETE))


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[Event, bytes]:
    """A sample event (with an id of its own) and its JSON with up to three fields changed."""
    sample = draw(st.sampled_from(SAMPLES))
    event = Event(sample.run_id, sample.payload, event_id=new_event_id())
    obj = orjson.loads(encode(event))
    paths = _paths(event)
    for pick, value in draw(st.lists(mutation, max_size=3)):
        *parents, name = paths[pick % len(paths)]
        target = obj
        for parent in parents:
            target = target[parent] if isinstance(target.get(parent), dict) else {}
        if value is DELETE:
            target.pop(name, None)
        else:
            target[name] = value
    return event, dump(obj).encode()


raw_records = st.one_of(
    mutated_events().map(lambda pair: pair[1]),
    st.binary(max_size=64),
    st.tuples(st.sampled_from([encode(e) for e in SAMPLES]), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
)


def storable(event: Event) -> None:
    """Raise unless ``event`` is one a producer could publish and ClickHouse's columns hold."""
    check_event(event)
    events_to_arrow(type(event.payload), [event])


# --------------------------------------------------------------------------- decode


@settings(FUZZ, max_examples=400)
@given(raw_records | odd_texts)
def test_decode_refuses_with_event_error_or_gives_a_storable_event(data: bytes | str) -> None:
    try:
        event = decode(data, location="fuzz:1")
    except EventError as exc:
        assert str(exc).startswith("fuzz:1: ")
        return
    storable(event)


# --------------------------------------------------------------------------- the importers

record_values = st.fixed_dictionaries(
    {},
    optional={
        "prompt": odd_texts | json_values,
        "completion": odd_texts | json_values,
        "reward": odd_ints | odd_floats | json_values,
        "timestamp": odd_times | odd_ints | odd_floats | json_values,
        "metadata": json_values,
        "step": odd_ints | json_values,
        "prompt_tokens": odd_ints,
        "success": st.booleans() | json_values,
        "response": st.fixed_dictionaries({"answer": odd_texts | json_values}) | json_values,
        "current_batch_content": odd_texts,
        "rewards": st.dictionaries(odd_texts, odd_floats | odd_ints, max_size=2) | json_values,
    },
)
log_lines = st.lists(
    st.one_of(
        st.builds(dump, record_values).map(str.encode),
        st.builds(lambda prompt: dump({"prompt": prompt, "completion": "c"}), odd_texts).map(str.encode),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
        st.just(b"[" * 5_000),  # past what json.loads reads without a RecursionError
    ),
    min_size=1,
    max_size=6,
)


def test_an_import_reports_or_imports_every_line_and_what_it_imports_is_storable(tmp_path: Path) -> None:
    settings_ = Settings(data_dir=tmp_path / "data")
    counter = iter(range(10**9))

    async def read_new(consumer: Any) -> list[Event]:
        out = []
        while records := await consumer.getmany(timeout_ms=50):
            out.extend(decode(r.value, r.location) for r in records)
        await consumer.commit()
        return out

    loop = asyncio.new_event_loop()
    consumer = open_consumer(settings_, event_topics(settings_.topic_prefix), "fuzz-reader")
    loop.run_until_complete(consumer.start())
    emitter = Emitter(settings_)

    @settings(FUZZ, max_examples=40)
    @given(log_lines)
    def run(lines: list[bytes]) -> None:
        path = tmp_path / f"llm_logs_{next(counter)}.jsonl"
        lines = [b'{"prompt": "first", "completion": "c"}', *lines]  # a JSON lines file, whatever the rest begins with
        path.write_bytes(b"\n".join(lines) + b"\n")
        summary = Importer(settings_, emitter=emitter, force=True, progress=False).run([path])
        taken = sum(1 for line in lines if line.strip())
        assert summary.imported + summary.error_count + sum(summary.skipped.values()) == taken
        assert all(e.startswith(f"{path}:") for e in summary.errors)
        imported = loop.run_until_complete(read_new(consumer))
        assert len(imported) == summary.imported
        for event in imported:
            storable(event)
        assert emitter.stats().failed == 0

    try:
        run()
    finally:
        emitter.close()
        loop.run_until_complete(consumer.stop())
        loop.close()


# --------------------------------------------------------------------------- a worker's record path


def test_a_worker_stores_or_dead_letters_every_record(tmp_path: Path) -> None:
    settings_ = Settings(data_dir=tmp_path / "data")
    offsets = iter(range(10**9))
    topic = event_topic(settings_.topic_prefix, "interaction")
    loop = asyncio.new_event_loop()
    letters = open_consumer(settings_, [topic_name(settings_.topic_prefix, DEAD_LETTER)], "fuzz-letters")
    loop.run_until_complete(letters.start())
    with open_store(settings_) as store:
        store.migrate()
        core = build_core(settings_, store, WorkerOptions())
        stages = StageSet(build_stages(WorkerOptions(), tmp_path / "out" / "sft.jsonl"))

        async def dead_lettered() -> set[int]:
            found = set()
            while records := await letters.getmany(timeout_ms=50):
                found.update(int(r.header("source_offset")) for r in records)
            return found

        @settings(FUZZ, max_examples=30)
        @given(st.lists(raw_records, min_size=1, max_size=8))
        def run(values: list[bytes]) -> None:
            records = [Record(topic, 0, next(offsets), b"run", value, 0) for value in values]
            core.handle_batch(records, stages)
            loop.run_until_complete(core.flush([stages]))
            dead = loop.run_until_complete(dead_lettered())
            for record in records:
                if record.offset in dead:
                    continue
                event = decode(record.value)  # not dead-lettered: it decoded, and must be stored
                table = table_for(event.event_type)
                rows = store.query_rows(
                    f"SELECT count() AS n FROM {table} WHERE event_id = {{id:String}}", {"id": event.event_id}
                )
                assert rows[0]["n"] >= 1, (record.offset, record.value[:200])

        try:
            run()
        finally:
            loop.run_until_complete(core.close())
            stages.close()
            loop.run_until_complete(letters.stop())
            loop.close()
