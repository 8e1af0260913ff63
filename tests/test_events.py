"""The event model: every type round-trips exactly; bad payloads name the field at fault."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
import pytest

from trainwire.errors import EventError
from trainwire.events import (
    MAX_NESTING,
    PAYLOAD_TYPES,
    Alert,
    Event,
    GroupStatsPayload,
    Interaction,
    JudgeRequest,
    JudgeScore,
    Logits,
    RewardStatsPayload,
    Source,
    TrainStep,
    check_event,
    decode,
    encode,
    new_event_id,
)

SAMPLES = [
    Interaction(
        prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        completion="4",
        reward=1.0,
        rewards={"accuracy": 1.0, "format": 0.5},
        success=True,
        latency_ms=12.5,
        prompt_tokens=9,
        completion_tokens=1,
        model="tiny",
        step=3,
        group_id="3:0",
        group_index=1,
        advantage=-0.25,
        metadata={"answer": "4", "level": 2, "nested": {"a": [1, 2]}},
    ),
    Interaction(prompt="plain text prompt", completion="", success=False, error="timeout"),
    TrainStep(step=10, epoch=0.5, loss=1.25, grad_norm=3.5, learning_rate=1e-5, metrics={"kl": 0.01, "reward": 0.7}),
    TrainStep(step=11, loss=math.nan, grad_norm=math.inf, metrics={"entropy": -math.inf}),
    JudgeRequest(interaction_id=new_event_id(), prompt="q", completion="a", reference="a", step=2, reward=0.0),
    JudgeScore(
        interaction_id=new_event_id(),
        judge_model="judge-1",
        template_version="default-v1",
        score=4.0,
        score_normalized=0.75,
        reasoning="Mostly right.",
        raw_output="Score: 4\nReasoning: Mostly right.",
        latency_ms=200.0,
    ),
    JudgeScore(
        interaction_id="x", judge_model="j", template_version="v", success=False, raw_output="??", error="unparseable"
    ),
    Logits(
        model="rl",
        sample_id="s1",
        position=4,
        target_token=" wait",
        logit=3.5,
        probability=0.01,
        rank=12,
        token_id=77,
        level=3,
        correct=False,
    ),
    Alert(
        rule="grad_norm_explosion",
        severity="critical",
        message="grad_norm jumped 50x",
        step=7,
        evidence={"grad_norm": 500.0},
    ),
    RewardStatsPayload(
        window_start_us=1_700_000_000_000_000,
        window_end_us=1_700_000_060_000_000,
        window="steps:10",
        reward_fn="total",
        step_start=0,
        step_end=9,
        count=80,
        mean=0.5,
        std=0.1,
        min=0.0,
        max=1.0,
        p10=0.3,
        p50=0.5,
        p90=0.7,
    ),
    GroupStatsPayload(step=3, interactions=16, groups=4, zero_variance_groups=1, zero_variance_share=0.25),
]


def same(a: Event, b: Event) -> bool:
    """Equality that treats NaN as equal to NaN (via the canonical encoding)."""
    return encode(a) == encode(b) and type(a.payload) is type(b.payload)


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.EVENT_TYPE)
def test_every_type_round_trips_exactly(payload) -> None:
    event = Event(run_id="run-1", payload=payload)
    back = decode(encode(event))
    assert same(back, event)
    assert back.event_type == payload.EVENT_TYPE
    assert back.ts == event.ts and back.ts.tzinfo is not None
    if not isinstance(payload, TrainStep):
        assert back == event


def test_every_registered_type_has_a_sample() -> None:
    assert {p.EVENT_TYPE for p in SAMPLES} == set(PAYLOAD_TYPES)


def test_non_finite_floats_survive() -> None:
    back = decode(encode(Event("r", TrainStep(step=1, loss=math.nan, grad_norm=-math.inf, metrics={"x": math.inf}))))
    assert math.isnan(back.payload.loss)
    assert back.payload.grad_norm == -math.inf
    assert back.payload.metrics["x"] == math.inf


def test_envelope_fields() -> None:
    event = Event(run_id="r", payload=TrainStep(step=1))
    obj = orjson.loads(encode(event))
    assert set(obj) == {"event_id", "event_type", "schema_version", "run_id", "source", "ts", "payload"}
    assert obj["ts"].endswith("Z") and len(obj["ts"]) == len("2026-01-01T00:00:00.000000Z")
    assert obj["source"] == {"host": event.source.host, "process": event.source.process, "library": "trainwire"}
    assert event.key == b"r"


def test_event_ids_are_uuid7_unique_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(i[14] == "7" for i in ids[:10])


def _raw(**changes) -> bytes:
    obj = orjson.loads(encode(Event("r", SAMPLES[0])))
    for path, value in changes.items():
        target = obj
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[p]
        if value is KeyError:
            del target[leaf]
        else:
            target[leaf] = value
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"payload__reward": "high"}, "payload.reward: expected a number, got str 'high'"),
        ({"payload__rewards": {"acc": "x"}}, "payload.rewards.acc: expected a number"),
        ({"payload__prompt": KeyError}, "payload.prompt: missing"),
        ({"payload__prompt": [{"content": "hi"}]}, "payload.prompt[0]: expected a chat message with a string 'role'"),
        ({"payload__success": "yes"}, "payload.success: expected true or false"),
        ({"payload__step": 1.5}, "payload.step: expected an integer"),
        ({"payload__surprise": 1}, "payload.surprise: unknown field for interaction"),
        ({"payload__completion": None}, "payload.completion: must not be null"),
        ({"event_type": "nope"}, "event_type: unknown event type 'nope'"),
        ({"ts": "yesterday"}, "ts: 'yesterday' is not an ISO-8601 timestamp"),
        ({"ts": "2026-01-01T00:00:00"}, "has no time zone"),
        ({"run_id": KeyError}, "run_id: missing"),
        ({"schema_version": 99}, "schema_version: 99 is not supported"),
        ({"source__process": "p"}, "source.process: expected an integer"),
        ({"source__process": True}, "source.process: expected an integer, got bool True"),
        ({"source": "gpu-3"}, "source: expected an object, got str"),
        ({"payload__step": True}, "payload.step: expected an integer, got bool True"),
        ({"payload__rewards": {"acc": True}}, "payload.rewards.acc: expected a number, got bool"),
        ({"payload__prompt": [{"role": "user"}]}, "payload.prompt[0].content: missing"),
        ({"payload__prompt": 5}, "payload.prompt: expected text or a list of chat messages, got int 5"),
        ({"payload__metadata": [1]}, "payload.metadata: expected an object, got list"),
        ({"payload": [1]}, "payload: expected an object, got list"),
        ({"schema_version": True}, "schema_version: expected an integer"),
        ({"event_id": 7}, "event_id: expected a string, got int 7"),
        ({"ts": 5}, "ts: expected an ISO-8601 UTC timestamp, got int 5"),
        ({"extra": 1}, "extra: unknown envelope field"),
        # Values no column can hold (Int64, UInt32, DateTime64), and times an offset moves off the calendar.
        ({"payload__step": 2**63}, "payload.step: 9223372036854775808 is out of range"),
        ({"payload__group_index": -(2**63)}, None),
        ({"payload__prompt_tokens": 2**64 - 1}, "payload.prompt_tokens: 18446744073709551615 is out of range"),
        ({"source__process": -1}, "source.process: -1 is out of range (0..4294967295)"),
        ({"source__process": 2**32}, "source.process: 4294967296 is out of range"),
        ({"source__process": 2**32 - 1}, None),
        ({"ts": "0001-01-01T00:30:00+01:00"}, "ts: 0001-01-01T00:30:00+01:00 is outside the times trainwire stores"),
        ({"ts": "9999-12-31T23:30:00-01:00"}, "ts: 9999-12-31T23:30:00-01:00 is outside the times trainwire stores"),
        ({"ts": "1899-12-31T23:59:59.999999Z"}, "is outside the times trainwire stores (1900-01-01 .. 2299-12-31 UTC)"),
        ({"ts": "2300-01-01T00:00:00Z"}, "ts: 2300-01-01T00:00:00+00:00 is outside the times trainwire stores"),
        ({"ts": "1900-01-01T00:00:00Z"}, None),
        ({"ts": "2300-01-01T00:59:59.999999+01:00"}, None),
        # Several problems at once: the first in a fixed order (unknown names, then fields in turn),
        # also when the object has as many fields as the type (one missing, one unknown).
        ({"payload__prompt": 5, "payload__metadata": KeyError, "payload__surprise": 1}, "payload.surprise: unknown"),
        ({"payload__reward": "high", "payload__step": "x"}, "payload.reward: expected a number"),
        ({"payload__completion": 1, "payload__prompt": KeyError}, "payload.prompt: missing"),
    ],
)
def test_bad_payloads_name_the_field(changes, message) -> None:
    if message is None:  # the edge of a range: still taken
        decode(_raw(**changes))
        return
    with pytest.raises(EventError) as info:
        decode(_raw(**changes), location="logs.jsonl:7")
    assert message in str(info.value)
    assert str(info.value).startswith("logs.jsonl:7: ")


def _nested(levels: int) -> str:
    return '{"a": ' * (levels - 1) + "{}" + "}" * (levels - 1)


def test_free_form_json_nested_deeper_than_orjson_writes_is_refused() -> None:
    obj = orjson.loads(encode(Event("r", Interaction(prompt="p", metadata={"x": "@"}))))
    # 1022: the deepest orjson reads (1024 levels), inside the envelope and the payload.
    for levels, field in ((MAX_NESTING, None), (MAX_NESTING + 1, "payload.metadata"), (1022, "payload.metadata")):
        raw = orjson.dumps(obj).replace(b'{"x":"@"}', _nested(levels).encode())
        if field is None:
            event = decode(raw)
            assert decode(encode(event)) == event  # as deep as may be, and it still writes
            continue
        with pytest.raises(EventError, match=rf"^{field}: nested more than {MAX_NESTING} levels deep"):
            decode(raw)
    prompt = '[{"role": "user", "content": ' + "[" * 300 + "]" * 300 + "}]"
    raw = orjson.dumps(obj).replace(b'"p"', prompt.encode(), 1)
    with pytest.raises(EventError, match=r"^payload\.prompt: nested more than"):
        decode(raw)


def test_check_event_refuses_what_a_worker_could_not_take_naming_the_field() -> None:
    deep = orjson.loads(_nested(MAX_NESTING - 1))
    check_event(Event("r", Interaction(prompt="p", step=2**63 - 1, metadata={"n": 2**64 - 1, "deep": deep})))
    refused = {
        "payload.step: 9223372036854775808 is out of range": Event("r", TrainStep(step=2**63)),
        "payload.metadata: nested more than 252 levels deep": Event(
            "r", Interaction(prompt="p", metadata={"deep": {"a": deep}})
        ),
        "payload.metadata: cannot be serialized: Integer exceeds 64-bit range": Event(
            "r", Interaction(prompt="p", metadata={"n": 2**64})
        ),
        "payload.completion: cannot be serialized: str is not valid UTF-8": Event(
            "r", Interaction(prompt="p", completion="\udc80")
        ),
        "run_id: cannot be serialized": Event("\ud800", TrainStep(step=1)),
        "source.process: 4294967296 is out of range": Event("r", TrainStep(step=1), source=Source("h", 2**32)),
        "ts: 1899-12-31T00:00:00+00:00 is outside": Event(
            "r", TrainStep(step=1), ts=datetime(1899, 12, 31, tzinfo=UTC)
        ),
    }
    for message, event in refused.items():
        with pytest.raises(EventError) as info:
            check_event(event)
        assert str(info.value).startswith(message), str(info.value)


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(EventError, match=r"^\(event\): not valid JSON"):
        decode(b"{oops")
    with pytest.raises(EventError, match="expected a JSON object, got list"):
        decode(b"[1, 2]")


def test_source_is_per_process_and_library() -> None:
    assert Source.current() is Source.current()
    assert Source.current("trl").library == "trl"
    before = datetime.now(UTC)
    assert before <= Event("r", TrainStep(step=0)).ts <= datetime.now(UTC)


def test_absent_optional_fields_take_their_defaults() -> None:
    obj = orjson.loads(encode(Event("r", Interaction(prompt="p"))))
    obj["payload"] = {"prompt": "p"}
    first, second = decode(orjson.dumps(obj)), decode(orjson.dumps(obj))
    assert first.payload == Interaction(prompt="p")
    assert first.payload.rewards is not second.payload.rewards  # default_factory: a dict of each its own


def test_numbers_are_converted_as_the_field_kind_says() -> None:
    obj = orjson.loads(encode(Event("r", SAMPLES[0])))
    obj["payload"].update(reward=1, latency_ms=None, rewards={"a": 2, "b": "-Infinity", "c": 0.5})
    payload = decode(orjson.dumps(obj)).payload
    assert payload.reward == 1.0 and type(payload.reward) is float
    assert payload.latency_ms is None
    assert payload.rewards == {"a": 2.0, "b": -math.inf, "c": 0.5} and type(payload.rewards["a"]) is float


def test_a_float_map_is_copied_not_shared() -> None:
    data = Interaction(prompt="p", rewards={"a": 1.0}).to_json_dict()
    assert Interaction.from_json_dict(data).rewards is not data["rewards"]


def test_timestamps_with_an_offset_are_read_as_utc() -> None:
    obj = orjson.loads(encode(Event("r", TrainStep(step=1))))
    obj["ts"] = "2026-01-01T02:00:00.5+02:00"
    assert decode(orjson.dumps(obj)).ts == datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    assert decode(orjson.dumps(obj)).ts.tzinfo is UTC


def test_decoded_sources_are_shared_but_still_checked() -> None:
    event = Event("r", TrainStep(step=1), source=Source("gpu-9", 77, "trl"))
    first, second = decode(encode(event)), decode(encode(event))
    assert first.source == event.source and first.source is second.source
    obj = orjson.loads(encode(event))
    obj["source"]["process"] = 77.0  # equal to the cached 77, but not an integer
    with pytest.raises(EventError, match=r"source\.process: expected an integer, got float"):
        decode(orjson.dumps(obj))


def test_events_of_several_sources_each_carry_their_own():
    """encode keeps the JSON of the last source it wrote: events of other sources, interleaved, write theirs."""
    sources = [Source("host-a", 1), Source("host-b", 2, "openai"), Source("host-a", 1)]
    events = [Event("r", Interaction(prompt="p", completion="c"), source=s) for s in sources * 2]
    for event in events:
        source = orjson.loads(encode(event))["source"]
        assert source == {"host": event.source.host, "process": event.source.process, "library": event.source.library}
        assert decode(encode(event)) == event
