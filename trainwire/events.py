"""The event model: one envelope for everything, a typed payload per event type.

Every event on the bus is an :class:`Event`::

    {"event_id": "0193...", "event_type": "interaction", "schema_version": 1, "run_id": "grpo-7",
     "source": {"host": "gpu-3", "process": 4121, "library": "trainwire"},
     "ts": "2026-11-22T17:35:00.123456Z", "payload": {...}}

``event_id`` is a UUIDv7 (unique, ordered by creation time), ``ts`` is UTC with microseconds.
Payload classes declare their fields once; the same declaration drives validation on decode,
the Arrow columns written to ClickHouse and the table schema checks.

Values must fit where they are stored: integers in ClickHouse's ``Int64`` (``source.process`` in
``UInt32``), ``ts`` within ``DateTime64``'s range (:data:`TS_MIN` .. :data:`TS_MAX`), free-form
JSON (``metadata``, ``evidence``, chat messages) nested at most :data:`MAX_NESTING` levels, so
that orjson can write the event. :func:`decode` refuses anything else naming the field, and
:func:`check_event` does the same for an event made in Python before it is published.

Serialization is orjson. Non-finite floats (a NaN loss is a thing worth knowing about) are
written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` in float fields and read
back as floats, so every event round-trips exactly. Inside free-form JSON objects
(``metadata``, ``evidence``) orjson writes non-finite floats as ``null``.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, ClassVar

import orjson

from trainwire.errors import EventError

SCHEMA_VERSION = 1
"""Version of the envelope and payload layout this code writes."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The range of an integer payload field (ClickHouse ``Int64``)."""

UINT32_MAX = 2**32 - 1
"""The largest ``source.process`` (ClickHouse ``UInt32``)."""

TS_MIN = datetime(1900, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""The range of ``ts``: what ClickHouse documents for ``DateTime64``."""

MAX_NESTING = 252
"""Levels of objects and lists a free-form field (``metadata``, ``evidence``, a chat prompt) may
have, its own included: orjson writes 254 levels, and the envelope and payload take two."""

# --------------------------------------------------------------------------- ids and time

_id_lock = threading.Lock()
_id_last_ms = 0
_id_seq = 0


def new_event_id() -> str:
    """A UUIDv7 string: 48 bits of Unix milliseconds, a 12-bit in-process sequence, 62 random bits.

    Ids made by one process are strictly increasing; ids from different processes are unique
    by their random bits (taken from ``os.urandom``, so forked children do not repeat them).
    """
    global _id_last_ms, _id_seq
    now_ms = time.time_ns() // 1_000_000
    with _id_lock:
        if now_ms > _id_last_ms:
            _id_last_ms, _id_seq = now_ms, 0
        else:
            _id_seq += 1
            if _id_seq > 0xFFF:
                _id_last_ms, _id_seq = _id_last_ms + 1, 0
        ms, seq = _id_last_ms, _id_seq
    rand_b = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utc_now() -> datetime:
    """The current time, UTC, with microseconds."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Source:
    """Who produced an event: host name, process id and the producing library."""

    host: str
    process: int
    library: str = "trainwire"

    _cache: ClassVar[dict[tuple[int, str], Source]] = {}

    @classmethod
    def current(cls, library: str = "trainwire") -> Source:
        """This process's source (cached per pid, so a forked child reports its own pid)."""
        key = (os.getpid(), library)
        source = cls._cache.get(key)
        if source is None:
            source = cls._cache[key] = cls(socket.gethostname(), key[0], library)
        return source


# --------------------------------------------------------------------------- field kinds


class Kind(Enum):
    """What a payload field holds; drives validation, Arrow and ClickHouse types."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    FLOAT_MAP = "float_map"  # dict[str, float]
    JSON = "json"  # free-form JSON object, dict[str, Any]
    PROMPT = "prompt"  # text, or chat messages [{"role": ..., "content": ...}]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload field: its name, kind, and whether it may be None / may be omitted."""

    name: str
    kind: Kind
    nullable: bool
    required: bool


def spec(kind: Kind) -> dict[str, Any]:
    """Field metadata marking the kind of a payload dataclass field."""
    return {"kind": kind}


_NONFINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _finite_or_text(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _check_str(value: Any, path: str) -> str:
    if isinstance(value, str):
        return value
    raise EventError(path, f"expected a string, got {_describe(value)}")


def _check_int(value: Any, path: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise EventError(path, f"expected an integer, got {_describe(value)}")
    if not low <= value <= high:
        raise EventError(path, f"{value} is out of range ({low}..{high})")
    return value


def check_int(value: Any, path: str) -> int:
    """``value`` if an integer field can store it (``Int64``), else an :class:`EventError` naming ``path``."""
    return _check_int(value, path)


def check_ts(value: datetime, path: str = "ts") -> datetime:
    """``value`` in UTC if it is an aware time within :data:`TS_MIN` .. :data:`TS_MAX`; else an :class:`EventError`."""
    if value.tzinfo is None:
        raise EventError(path, f"{value.isoformat()} has no time zone; trainwire timestamps are UTC")
    try:
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 moved past the ends of the calendar by its offset
        utc = None
    if utc is None or not TS_MIN <= utc <= TS_MAX:
        raise ts_out_of_range(path, value.isoformat())
    return utc


def ts_out_of_range(path: str, shown: str) -> EventError:
    """The error for a time (``shown`` as its source wrote it) that ``ts`` cannot hold."""
    return EventError(
        path, f"{shown} is outside the times trainwire stores ({TS_MIN:%Y-%m-%d} .. {TS_MAX:%Y-%m-%d} UTC)"
    )


def _check_float(value: Any, path: str) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value in _NONFINITE_TEXT:
        return _NONFINITE_TEXT[value]
    raise EventError(path, f"expected a number, got {_describe(value)}")


def _check_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    raise EventError(path, f"expected true or false, got {_describe(value)}")


def _check_float_map(value: Any, path: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise EventError(path, f"expected an object of numbers, got {_describe(value)}")
    for number in value.values():
        if type(number) is not float:  # something to convert, or to refuse: value by value
            return {k: _check_float(v, f"{path}.{k}") for k, v in value.items()}
    return dict(value)


def _check_json(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise EventError(path, f"expected an object, got {_describe(value)}")


def _check_prompt(value: Any, path: str) -> Prompt:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for i, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise EventError(f"{path}[{i}]", "expected a chat message with a string 'role'")
            if "content" not in message:
                raise EventError(f"{path}[{i}].content", "missing")
        return value
    raise EventError(path, f"expected text or a list of chat messages, got {_describe(value)}")


_CHECKS: dict[Kind, Callable[[Any, str], Any]] = {
    Kind.STR: _check_str,
    Kind.INT: _check_int,
    Kind.FLOAT: _check_float,
    Kind.BOOL: _check_bool,
    Kind.FLOAT_MAP: _check_float_map,
    Kind.JSON: _check_json,
    Kind.PROMPT: _check_prompt,
}
"""Validate one decoded value of a kind and return it in its Python form, or raise naming ``path``."""

_PLAIN_TYPES: dict[Kind, type | None] = {
    Kind.STR: str,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.BOOL: bool,
    Kind.FLOAT_MAP: None,  # its values need a look too
    Kind.JSON: dict,
    Kind.PROMPT: str,  # chat messages need a look too
}
"""The exact type orjson gives a valid value of each kind that is taken as it is, without its check."""


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


# --------------------------------------------------------------------------- payloads


class Payload:
    """Base of the typed payloads. Subclasses are slotted dataclasses with kinded fields."""

    __slots__ = ()
    EVENT_TYPE: ClassVar[str]
    TOPIC: ClassVar[str]  # the topic suffix and the ClickHouse table name
    FIELDS: ClassVar[tuple[FieldSpec, ...]]
    _FLOATS: ClassVar[tuple[str, ...]]
    _float_values: ClassVar[Callable[[Payload], tuple[float | None, ...]]]
    """The values of the ``_FLOATS`` fields, as a tuple."""
    _FLOAT_MAPS: ClassVar[tuple[str, ...]]
    _NESTED: ClassVar[tuple[str, ...]]  # the fields that may hold nested objects and lists
    _NAMES: ClassVar[frozenset[str]]
    _ABSENT: ClassVar[dict[str, Any]]  # every field name, mapped to _MISSING
    _read_fields: ClassVar[Callable[[dict[str, Any], str], Payload]]

    def to_json(self) -> Payload | dict[str, Any]:
        """What orjson serializes: the dataclass itself, or, with non-finite floats, :meth:`to_json_dict`."""
        # One sum over every float (in C) instead of a test per value: an infinity or NaN makes the
        # sum non-finite, and a sum of finite values that overflows only costs the exact path below.
        total = sum(filter(None, self._float_values(self)))
        for name in self._FLOAT_MAPS:
            total += sum(getattr(self, name).values())
        if math.isfinite(total):
            return self
        return self.to_json_dict()

    def to_json_dict(self) -> dict[str, Any]:
        """The payload as a JSON-ready dict (non-finite floats as text); :meth:`from_json_dict` reads it."""
        out = {f.name: getattr(self, f.name) for f in self.FIELDS}
        for name in self._FLOATS:
            value = out[name]
            if value is not None and not math.isfinite(value):
                out[name] = _finite_or_text(value)
        for name in self._FLOAT_MAPS:
            out[name] = {k: _finite_or_text(v) for k, v in out[name].items()}
        return out

    @classmethod
    def from_json_dict(cls, data: Any, path: str = "payload") -> Payload:
        """Validate a decoded JSON object and build the payload; errors name the field."""
        if not isinstance(data, dict):
            raise EventError(path, f"expected an object, got {_describe(data)}")
        if len(data) == len(cls.FIELDS):
            # The usual case, every field present and no other, takes the generated reader alone. A
            # missing field (so another is unknown) or a refused value falls through, so that the first
            # problem is reported in the same order as always: unknown fields, then each field in turn.
            try:
                return cls._read_fields(data, path)
            except (KeyError, EventError):
                pass  # reported below, in order
        unknown = sorted(set(data) - cls._NAMES)
        if unknown:
            raise EventError(f"{path}.{unknown[0]}", f"unknown field for {cls.EVENT_TYPE}")
        return cls._read_fields(cls._ABSENT | data, path)


_MISSING: Any = object()
"""The value of a field absent from the decoded object, as :meth:`Payload.from_json_dict` reads it."""


@dataclass(frozen=True, slots=True)
class _FieldReader:
    """Reads one payload field's value that is not simply taken as it is (see :func:`_fields_reader`)."""

    name: str
    check: Callable[[Any, str], Any]
    default: Any  # _MISSING: none (the field is required, or has a default_factory)
    default_factory: Callable[[], Any] | None

    def convert(self, value: Any, path: str) -> Any:
        """The field's default (``value`` is :data:`_MISSING`), ``value`` checked, or an :class:`EventError`."""
        if value is _MISSING:
            if self.default_factory is not None:
                return self.default_factory()
            if self.default is _MISSING:
                raise EventError(f"{path}.{self.name}", "missing")
            return self.default
        if value is None:  # only here when the field is not nullable
            raise EventError(f"{path}.{self.name}", "must not be null")
        return self.check(value, f"{path}.{self.name}")


def _tuple_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A function returning the attributes ``names`` of an object as a tuple (one call in C when there are several)."""
    if len(names) > 1:
        return operator.attrgetter(*names)
    return lambda obj: tuple(getattr(obj, name) for name in names)


def _fields_reader(
    cls: type[Payload], fields: list[tuple[FieldSpec, _FieldReader]]
) -> Callable[[dict[str, Any], str], Payload]:
    """A function building a ``cls`` from a dict with every field, generated with the fields written out.

    Decoding runs once per record in every worker, so a field costs one subscript and, for the
    usual value, one type test: a value of the kind's plain type (and ``None`` where the field is
    nullable; an integer also within range) is taken as it is. Anything else (a float map, chat
    messages, an int for a float, :data:`_MISSING`, a wrong type, a value out of range) goes to the
    field's :class:`_FieldReader`, which converts it or raises. A loop over a table of the fields
    took about 1.5 times as long.
    """
    namespace: dict[str, Any] = {"cls": cls}
    lines = ["def read_fields(data, path):"]
    for i, (fs, reader) in enumerate(fields):
        namespace[f"reader_{i}"] = reader
        lines.append(f"    v{i} = data[{fs.name!r}]")
        convert = f"v{i} = reader_{i}.convert(v{i}, path)"
        plain = _PLAIN_TYPES[fs.kind]
        if plain is None:
            lines.append(f"    {convert}")
            continue
        namespace[plain.__name__] = plain
        test = f"type(v{i}) is not {plain.__name__}"
        if fs.kind is Kind.INT:
            test = f"{test} or not {INT64_MIN} <= v{i} <= {INT64_MAX}"
        if fs.nullable:
            test = f"v{i} is not None and ({test})"
        lines += [f"    if {test}:", f"        {convert}"]
    lines.append(f"    return cls({', '.join(f'v{i}' for i in range(len(fields)))})")
    exec("\n".join(lines), namespace)
    return namespace["read_fields"]


PAYLOAD_TYPES: dict[str, type[Payload]] = {}


def payload_type(event_type: str, topic: str):
    """Register a payload dataclass under ``event_type``, stored in topic/table ``topic``."""

    def register(cls: type[Payload]) -> type[Payload]:
        specs = []
        readers = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            kind = f.metadata["kind"]
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            nullable = "None" in str(f.type)
            specs.append(FieldSpec(f.name, kind, nullable, required))
            default = _MISSING if f.default is dataclasses.MISSING else f.default
            factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
            readers.append(_FieldReader(f.name, _CHECKS[kind], default, factory))
        cls.EVENT_TYPE = event_type
        cls.TOPIC = topic
        cls.FIELDS = tuple(specs)
        cls._FLOATS = tuple(s.name for s in specs if s.kind is Kind.FLOAT)
        cls._float_values = staticmethod(_tuple_getter(cls._FLOATS))
        cls._FLOAT_MAPS = tuple(s.name for s in specs if s.kind is Kind.FLOAT_MAP)
        cls._NESTED = tuple(s.name for s in specs if s.kind in (Kind.JSON, Kind.PROMPT))
        cls._NAMES = frozenset(s.name for s in specs)
        cls._ABSENT = dict.fromkeys(cls._NAMES, _MISSING)
        cls._read_fields = staticmethod(_fields_reader(cls, list(zip(specs, readers, strict=True))))
        PAYLOAD_TYPES[event_type] = cls
        return cls

    return register


Prompt = str | list[dict[str, Any]]


@payload_type("interaction", "interactions")
@dataclass(slots=True)
class Interaction(Payload):
    """One LLM call or one sampled completion: what went in, what came out, how it scored."""

    prompt: Prompt = field(metadata=spec(Kind.PROMPT))
    completion: str = field(default="", metadata=spec(Kind.STR))
    reward: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    rewards: dict[str, float] = field(default_factory=dict, metadata=spec(Kind.FLOAT_MAP))
    success: bool = field(default=True, metadata=spec(Kind.BOOL))
    error: str | None = field(default=None, metadata=spec(Kind.STR))
    latency_ms: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    prompt_tokens: int | None = field(default=None, metadata=spec(Kind.INT))
    completion_tokens: int | None = field(default=None, metadata=spec(Kind.INT))
    model: str | None = field(default=None, metadata=spec(Kind.STR))
    step: int | None = field(default=None, metadata=spec(Kind.INT))
    group_id: str | None = field(default=None, metadata=spec(Kind.STR))
    group_index: int | None = field(default=None, metadata=spec(Kind.INT))
    advantage: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    metadata: dict[str, Any] = field(default_factory=dict, metadata=spec(Kind.JSON))


@payload_type("train_step", "train_steps")
@dataclass(slots=True)
class TrainStep(Payload):
    """The numbers a trainer logs at one step; anything beyond the named ones goes in ``metrics``."""

    step: int = field(metadata=spec(Kind.INT))
    epoch: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    loss: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    grad_norm: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    learning_rate: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    metrics: dict[str, float] = field(default_factory=dict, metadata=spec(Kind.FLOAT_MAP))


@payload_type("judge_request", "judge_requests")
@dataclass(slots=True)
class JudgeRequest(Payload):
    """Ask the judge to grade one interaction; ``step``, ``reward`` and ``rewards`` are the interaction's."""

    interaction_id: str = field(metadata=spec(Kind.STR))
    prompt: Prompt = field(metadata=spec(Kind.PROMPT))
    completion: str = field(metadata=spec(Kind.STR))
    reference: str | None = field(default=None, metadata=spec(Kind.STR))
    step: int | None = field(default=None, metadata=spec(Kind.INT))
    reward: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    rewards: dict[str, float] = field(default_factory=dict, metadata=spec(Kind.FLOAT_MAP))
    metadata: dict[str, Any] = field(default_factory=dict, metadata=spec(Kind.JSON))


@payload_type("judge_score", "judge_scores")
@dataclass(slots=True)
class JudgeScore(Payload):
    """The judge's verdict on one interaction; a failed judgement has ``success=False`` and no score.

    ``step``, ``reward`` and ``rewards`` are the judged interaction's, as its request carried them, so
    that judge and rule reward compare without a join.
    """

    interaction_id: str = field(metadata=spec(Kind.STR))
    judge_model: str = field(metadata=spec(Kind.STR))
    template_version: str = field(metadata=spec(Kind.STR))
    success: bool = field(default=True, metadata=spec(Kind.BOOL))
    score: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    score_normalized: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    reasoning: str | None = field(default=None, metadata=spec(Kind.STR))
    raw_output: str = field(default="", metadata=spec(Kind.STR))
    error: str | None = field(default=None, metadata=spec(Kind.STR))
    latency_ms: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    step: int | None = field(default=None, metadata=spec(Kind.INT))
    reward: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    rewards: dict[str, float] = field(default_factory=dict, metadata=spec(Kind.FLOAT_MAP))
    # provenance: what made the verdict ('' on scores from before it was recorded)
    template_name: str = field(default="", metadata=spec(Kind.STR))
    template_hash: str = field(default="", metadata=spec(Kind.STR))
    """sha256 of the template text and its few-shot examples."""
    mode: str = field(default="", metadata=spec(Kind.STR))
    """``single`` (one request per completion) or ``group`` (one request per GRPO group)."""
    parser_version: str = field(default="", metadata=spec(Kind.STR))
    sampling: dict[str, Any] = field(default_factory=dict, metadata=spec(Kind.JSON))
    """The request's sampling parameters (``temperature``, ``max_tokens``, ``api``, ...)."""
    config_id: str = field(default="", metadata=spec(Kind.STR))
    """A digest of all the provenance above and the judge model: equal ids, same judge configuration."""


@payload_type("logits", "logits")
@dataclass(slots=True)
class Logits(Payload):
    """A target token's logit, probability and rank at one position of one sample's answer."""

    model: str = field(metadata=spec(Kind.STR))
    sample_id: str = field(metadata=spec(Kind.STR))
    position: int = field(metadata=spec(Kind.INT))
    target_token: str = field(metadata=spec(Kind.STR))
    logit: float = field(metadata=spec(Kind.FLOAT))
    probability: float = field(metadata=spec(Kind.FLOAT))
    rank: int = field(metadata=spec(Kind.INT))
    token_id: int | None = field(default=None, metadata=spec(Kind.INT))
    level: int | None = field(default=None, metadata=spec(Kind.INT))
    correct: bool | None = field(default=None, metadata=spec(Kind.BOOL))


@payload_type("alert", "alerts")
@dataclass(slots=True)
class Alert(Payload):
    """Something about a run that a person should look at, with the evidence."""

    rule: str = field(metadata=spec(Kind.STR))
    severity: str = field(metadata=spec(Kind.STR))
    message: str = field(metadata=spec(Kind.STR))
    step: int | None = field(default=None, metadata=spec(Kind.INT))
    evidence: dict[str, Any] = field(default_factory=dict, metadata=spec(Kind.JSON))


@payload_type("reward_stats", "reward_stats")
@dataclass(slots=True)
class RewardStatsPayload(Payload):
    """Rolling statistics of one reward function over one window (published by the stats worker).

    ``window`` is ``steps`` (tumbling over ``step_start..step_end``) or ``time`` (sliding, by event time);
    ``reward_fn`` is a reward function's name, or ``total``. Times are Unix microseconds.
    """

    window_start_us: int = field(metadata=spec(Kind.INT))
    window_end_us: int = field(metadata=spec(Kind.INT))
    window: str = field(metadata=spec(Kind.STR))
    reward_fn: str = field(metadata=spec(Kind.STR))
    step_start: int | None = field(default=None, metadata=spec(Kind.INT))
    step_end: int | None = field(default=None, metadata=spec(Kind.INT))
    count: int = field(default=0, metadata=spec(Kind.INT))
    nonfinite: int = field(default=0, metadata=spec(Kind.INT))
    mean: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    std: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    min: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    max: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    p10: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    p50: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    p90: float | None = field(default=None, metadata=spec(Kind.FLOAT))


@payload_type("group_stats", "group_stats")
@dataclass(slots=True)
class GroupStatsPayload(Payload):
    """GRPO group statistics of one training step (see ``trainwire.processors.stats.GroupStats``)."""

    step: int = field(metadata=spec(Kind.INT))
    interactions: int = field(default=0, metadata=spec(Kind.INT))
    groups: int = field(default=0, metadata=spec(Kind.INT))
    zero_variance_groups: int = field(default=0, metadata=spec(Kind.INT))
    zero_variance_share: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    mean_group_std: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    reward_mean: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    reward_std: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    length_reward_corr: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    judge_pairs: int = field(default=0, metadata=spec(Kind.INT))
    judge_pearson: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    judge_spearman: float | None = field(default=None, metadata=spec(Kind.FLOAT))
    judge_median_agreement: float | None = field(default=None, metadata=spec(Kind.FLOAT))


# --------------------------------------------------------------------------- the envelope


@dataclass(slots=True)
class Event:
    """The envelope around every payload."""

    run_id: str
    payload: Payload
    event_id: str = field(default_factory=new_event_id)
    ts: datetime = field(default_factory=utc_now)
    source: Source = field(default_factory=Source.current)
    schema_version: int = SCHEMA_VERSION

    @property
    def event_type(self) -> str:
        """The payload's registered type name (``interaction``, ``train_step``, ...)."""
        return self.payload.EVENT_TYPE

    @property
    def key(self) -> bytes:
        """The Kafka message key: the run id, so a run stays ordered within a partition."""
        return self.run_id.encode()


_ENVELOPE = ("event_id", "event_type", "schema_version", "run_id", "source", "ts", "payload")

_source_json: tuple[Source, orjson.Fragment] | None = None
"""The last source :func:`encode` wrote, and its JSON (a process's events nearly all share one)."""


def encode(event: Event) -> bytes:
    """Serialize an event to JSON bytes with orjson."""
    global _source_json
    source, written = _source_json or (None, None)
    if event.source is not source:
        source = event.source
        written = orjson.Fragment(
            orjson.dumps({"host": source.host, "process": source.process, "library": source.library})
        )
        _source_json = source, written
    return orjson.dumps(
        {
            "event_id": event.event_id,
            "event_type": event.payload.EVENT_TYPE,
            "schema_version": event.schema_version,
            "run_id": event.run_id,
            "source": written,
            "ts": event.ts,
            "payload": event.payload.to_json(),
        },
        option=orjson.OPT_UTC_Z,
    )


def decode(data: bytes | str, location: str | None = None) -> Event:
    """Parse and validate one event; raise :class:`EventError` naming the field and the problem.

    ``location`` (a file and line, a topic and offset) is added to the error message.
    """
    try:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise EventError("(event)", f"not valid JSON: {exc}") from None
        return event_from_dict(obj)
    except EventError as exc:
        raise (exc.at(location) if location else exc) from None


def check_event(event: Event, path: str = "payload") -> None:
    """Raise :class:`EventError` naming the field when ``event`` could not be published and stored as it is.

    The test is the worker's: the event must encode, and pass the validation :func:`decode`
    applies (every field's type and range), here to its values as they are, without parsing the
    JSON again (half the cost). Producers check the events they make from their callers' values
    with it, so that a bad value is refused where it came from, not dead-lettered by the worker. A
    payload field is named ``{path}.{field}`` (``path="record"``: ``record.reward``), envelope
    fields as they are.
    """
    try:
        try:
            encode(event)
        except Exception as exc:  # orjson.JSONEncodeError and whatever a value of a foreign type raises
            raise _unencodable(event, exc) from None
        source = event.source
        event_from_dict(
            {
                "event_id": event.event_id,
                "event_type": event.event_type,
                "schema_version": event.schema_version,
                "run_id": event.run_id,
                "source": {"host": source.host, "process": source.process, "library": source.library},
                "ts": event.ts.isoformat() if isinstance(event.ts, datetime) else event.ts,
                "payload": event.payload.to_json_dict(),
            }
        )
    except EventError as exc:
        if exc.field != "payload" and not exc.field.startswith("payload."):
            raise
        raise EventError(path + exc.field.removeprefix("payload"), exc.problem) from None


def _unencodable(event: Event, exc: Exception) -> EventError:
    """The error naming the first part of ``event`` that orjson cannot write (``exc``: the whole event's)."""
    parts: list[tuple[str, Any]] = [
        ("event_id", event.event_id),
        ("run_id", event.run_id),
        ("source.host", getattr(event.source, "host", None)),
        ("source.library", getattr(event.source, "library", None)),
        ("ts", event.ts),
    ]
    # A payload field sits two levels deep in the event: wrapped as deep here, its nesting counts the same.
    parts += [(f"payload.{f.name}", {"": {"": getattr(event.payload, f.name, None)}}) for f in event.payload.FIELDS]
    for path, value in parts:
        try:
            orjson.dumps(value)
        except Exception as part_exc:
            return EventError(path, _unwritable(part_exc))
    return EventError("(event)", _unwritable(exc))


def _unwritable(exc: Exception) -> str:
    if "Recursion limit" in str(exc):
        return f"nested more than {MAX_NESTING} levels deep"
    return f"cannot be serialized: {exc}"


def _check_nesting(payload: Payload) -> None:
    """Raise :class:`EventError` when a free-form field of ``payload`` nests deeper than :data:`MAX_NESTING`.

    orjson measures it, in C: it writes the value inside two levels, as in an event, or refuses
    it. About 0.2 us for usual metadata; a walk in Python took ten times as long.
    """
    for name in payload._NESTED:
        value = getattr(payload, name)
        if value and type(value) is not str:
            try:
                orjson.dumps(((value,),))
            except orjson.JSONEncodeError as exc:
                raise EventError(f"payload.{name}", _unwritable(exc)) from None


def event_from_dict(obj: Any) -> Event:
    """Validate a decoded JSON object as an event."""
    if not isinstance(obj, dict):
        raise EventError("(event)", f"expected a JSON object, got {_describe(obj)}")
    if obj.keys() != _ENVELOPE_KEYS:
        for name in _ENVELOPE:
            if name not in obj:
                raise EventError(name, "missing")
        raise EventError(sorted(set(obj) - _ENVELOPE_KEYS)[0], "unknown envelope field")
    event_type = obj["event_type"]
    payload_cls = PAYLOAD_TYPES.get(event_type) if isinstance(event_type, str) else None
    if payload_cls is None:
        raise EventError("event_type", f"unknown event type {event_type!r}; known: {', '.join(PAYLOAD_TYPES)}")
    # As in Payload.from_json_dict: one type test for the usual value, the full check otherwise.
    version = obj["schema_version"]
    if type(version) is not int:
        version = _check_int(version, "schema_version")
    if not 1 <= version <= SCHEMA_VERSION:
        raise EventError("schema_version", f"{version} is not supported (this trainwire reads 1..{SCHEMA_VERSION})")
    source = obj["source"]
    if not isinstance(source, dict):
        raise EventError("source", f"expected an object, got {_describe(source)}")
    run_id = obj["run_id"]
    if type(run_id) is not str:
        run_id = _check_str(run_id, "run_id")
    payload = payload_cls.from_json_dict(obj["payload"])
    _check_nesting(payload)
    event_id = obj["event_id"]
    if type(event_id) is not str:
        event_id = _check_str(event_id, "event_id")
    return Event(run_id, payload, event_id, _parse_ts(obj["ts"]), _source_from(source), version)


_ENVELOPE_KEYS = frozenset(_ENVELOPE)

_decoded_sources: dict[tuple[str, int, str], Source] = {}
"""Sources seen by :func:`_source_from`: a stream holds few producers, so most events share one."""


def _source_from(obj: dict[str, Any]) -> Source:
    host, process, library = obj.get("host"), obj.get("process"), obj.get("library")
    # Only exact types reach the cache: an equal key of other types (True == 1) must still be refused.
    if type(host) is str and type(process) is int and 0 <= process <= UINT32_MAX and type(library) is str:
        key = (host, process, library)
        source = _decoded_sources.get(key)
        if source is None:
            if len(_decoded_sources) >= 4096:  # a long-lived worker meets new processes without end
                _decoded_sources.clear()
            source = _decoded_sources[key] = Source(host, process, library)
        return source
    return Source(
        _check_str(host, "source.host"),
        _check_int(process, "source.process", 0, UINT32_MAX),
        _check_str(library, "source.library"),
    )


def _parse_ts(value: Any) -> datetime:
    if not isinstance(value, str):
        raise EventError("ts", f"expected an ISO-8601 UTC timestamp, got {_describe(value)}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise EventError("ts", f"{value!r} is not an ISO-8601 timestamp") from None
    if ts.tzinfo is UTC and TS_MIN <= ts <= TS_MAX:  # what encode writes ("Z"): nothing to convert
        return ts
    if ts.tzinfo is None:
        raise EventError("ts", f"{value!r} has no time zone; trainwire timestamps are UTC")
    return check_ts(ts)
