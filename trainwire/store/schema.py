"""How events become ClickHouse rows: one table per event type, columns derived from the payload.

Every table starts with the envelope columns (``event_id``, ``run_id``, ``ts``,
``schema_version``, ``source_host``, ``source_process``, ``source_library``), then one column
per payload field. A prompt is stored twice: ``prompt`` as plain text (chat messages rendered
``role: content`` per line) and ``prompt_messages`` as the JSON list ('' for a text prompt).
Free-form objects (``metadata``, ``evidence``) are JSON text; ``rewards``/``metrics`` are
``Map(String, Float64)``.

The SQL migrations in ``migrations/`` create these tables; ``expected_columns`` is what they
must agree with (a test compares them with ``system.columns``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from itertools import accumulate, chain
from typing import Any

import orjson
import pyarrow as pa

from trainwire.errors import EventError
from trainwire.events import PAYLOAD_TYPES, Event, Kind, Payload
from trainwire.gcpause import gc_paused

_UTC_MICROSECONDS = pa.timestamp("us", tz="UTC")
_MICROSECONDS = pa.timestamp("us")

ENVELOPE_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("event_id", "String", pa.string()),
    ("run_id", "LowCardinality(String)", pa.string()),
    ("ts", "DateTime64(6, 'UTC')", _UTC_MICROSECONDS),
    ("schema_version", "UInt16", pa.uint16()),
    ("source_host", "LowCardinality(String)", pa.string()),
    ("source_process", "UInt32", pa.uint32()),
    ("source_library", "LowCardinality(String)", pa.string()),
)

_TYPES: dict[Kind, tuple[str, pa.DataType]] = {
    Kind.STR: ("String", pa.string()),
    Kind.INT: ("Int64", pa.int64()),
    Kind.FLOAT: ("Float64", pa.float64()),
    Kind.BOOL: ("Bool", pa.bool_()),
    Kind.FLOAT_MAP: ("Map(String, Float64)", pa.map_(pa.string(), pa.float64())),
    Kind.JSON: ("String", pa.string()),
    Kind.PROMPT: ("String", pa.string()),
}


def table_for(event_type: str) -> str:
    """The ClickHouse table that stores events of ``event_type``."""
    return PAYLOAD_TYPES[event_type].TOPIC


def expected_columns(payload_cls: type[Payload]) -> list[tuple[str, str]]:
    """``(name, ClickHouse type)`` of every column the table of ``payload_cls`` must have."""
    columns = [(name, ch) for name, ch, _ in ENVELOPE_COLUMNS]
    for f in payload_cls.FIELDS:
        ch, _ = _TYPES[f.kind]
        nullable = f.nullable and f.kind not in (Kind.FLOAT_MAP, Kind.JSON)
        columns.append((f.name, f"Nullable({ch})" if nullable else ch))
        if f.kind is Kind.PROMPT:
            columns.append((f"{f.name}_messages", "String"))
    columns.append(("inserted_at", "DateTime64(6, 'UTC')"))
    return columns


def prompt_text(prompt: str | list[dict[str, Any]]) -> str:
    """A prompt as plain text: chat messages become ``role: content`` lines."""
    if isinstance(prompt, str):
        return prompt
    lines = []
    for message in prompt:
        content = message.get("content")
        if isinstance(content, list):  # multi-part content: keep the text parts
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        lines.append(f"{message.get('role')}: {content}")
    return "\n".join(lines)


def events_to_arrow(payload_cls: type[Payload], events: Iterable[Event]) -> pa.Table:
    """An Arrow table of ``events`` (all of ``payload_cls``) with the columns of its ClickHouse table.

    Each column is one pass over the batch handed to pyarrow with its type, never a dict per row.
    The cyclic garbage collector is paused meanwhile: the batch creates many short-lived objects
    and no cycles, and collections triggered by them cost as much as the conversion itself.

    Raises :class:`EventError` naming the column when a value does not fit it (whatever the
    conversion raised), so that a caller can tell the batch's data from the store at fault.
    """
    events = events if isinstance(events, list) else list(events)
    column = "(batch)"
    try:
        with gc_paused():
            sources = [e.source for e in events]
            envelope = (
                [e.event_id for e in events],
                [e.run_id for e in events],
                [e.ts for e in events],
                [e.schema_version for e in events],
                [s.host for s in sources],
                [s.process for s in sources],
                [s.library for s in sources],
            )
            columns: dict[str, pa.Array] = {}
            for (column, _, arrow_type), values in zip(ENVELOPE_COLUMNS, envelope, strict=True):
                if arrow_type == _UTC_MICROSECONDS:
                    # Converted without the zone, then labelled UTC: pyarrow takes aware datetimes to UTC
                    # (and naive ones as they are) both ways, and skips a time-zone lookup per value.
                    columns[column] = pa.array(values, _MICROSECONDS).view(arrow_type)
                    continue
                columns[column] = pa.array(values, arrow_type)
            dumps = orjson.dumps
            payloads = [e.payload for e in events]
            for f, values in zip(payload_cls.FIELDS, _field_lists(payload_cls)(payloads), strict=True):
                column = f.name
                # JSON text is decoded to str at once: each orjson result is a block of its own from
                # malloc, and holding a batch of them measured up to ten times slower than decoding.
                if f.kind is Kind.JSON:
                    columns[column] = pa.array([dumps(v).decode() if v else "{}" for v in values], pa.string())
                    continue
                if f.kind is Kind.FLOAT_MAP:
                    columns[column] = _float_map(values)
                    continue
                if f.kind is Kind.PROMPT:
                    messages = ["" if isinstance(v, str) or v is None else dumps(v).decode() for v in values]
                    columns[f"{column}_messages"] = pa.array(messages, pa.string())
                    values = [v if isinstance(v, str) or v is None else prompt_text(v) for v in values]
                columns[column] = pa.array(values, _TYPES[f.kind][1])
            return pa.table(columns)
    except Exception as exc:
        problem = f"cannot be stored in ClickHouse: {type(exc).__name__}: {exc}"
        raise EventError(f"column {column}", problem) from exc


@functools.cache
def _field_lists(payload_cls: type[Payload]) -> Callable[[list[Payload]], tuple[list[Any], ...]]:
    """A function taking payloads of ``payload_cls`` to one list of values per field, in field order.

    It is generated with the field names written out: ``[p.step for p in payloads]`` is one
    specialized slot read per row, twice as fast as ``map(attrgetter("step"), payloads)``.
    """
    lists = "".join(f"[p.{f.name} for p in payloads], " for f in payload_cls.FIELDS)
    namespace: dict[str, Any] = {}
    exec(f"def field_lists(payloads):\n    return ({lists})", namespace)
    return namespace["field_lists"]


def _float_map(values: list[dict[str, float]]) -> pa.MapArray:
    """``Map(String, Float64)`` assembled from flat keys, values and offsets: no list per row."""
    offsets = pa.array([0, *accumulate(map(len, values))], pa.int32())
    keys = pa.array(list(chain.from_iterable(values)), pa.string())
    items = pa.array(list(chain.from_iterable(map(dict.values, values))), pa.float64())
    return pa.MapArray.from_arrays(offsets, keys, items)
