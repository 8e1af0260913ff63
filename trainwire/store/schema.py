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

from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa

from trainwire.events import PAYLOAD_TYPES, Event, Kind, Payload

ENVELOPE_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("event_id", "String", pa.string()),
    ("run_id", "LowCardinality(String)", pa.string()),
    ("ts", "DateTime64(6, 'UTC')", pa.timestamp("us", tz="UTC")),
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
    """An Arrow table of ``events`` (all of ``payload_cls``) with the columns of its ClickHouse table."""
    events = list(events)
    columns: dict[str, list[Any]] = {
        "event_id": [e.event_id for e in events],
        "run_id": [e.run_id for e in events],
        "ts": [e.ts for e in events],
        "schema_version": [e.schema_version for e in events],
        "source_host": [e.source.host for e in events],
        "source_process": [e.source.process for e in events],
        "source_library": [e.source.library for e in events],
    }
    types = {name: arrow for name, _, arrow in ENVELOPE_COLUMNS}
    for f in payload_cls.FIELDS:
        values = [getattr(e.payload, f.name) for e in events]
        _, arrow = _TYPES[f.kind]
        if f.kind is Kind.JSON:
            values = [orjson.dumps(v or {}).decode() for v in values]
        elif f.kind is Kind.FLOAT_MAP:
            values = [list((v or {}).items()) for v in values]
        elif f.kind is Kind.PROMPT:
            columns[f"{f.name}_messages"] = [
                "" if isinstance(v, str) or v is None else orjson.dumps(v).decode() for v in values
            ]
            types[f"{f.name}_messages"] = pa.string()
            values = [prompt_text(v) if v is not None else None for v in values]
        columns[f.name] = values
        types[f.name] = arrow
    return pa.table({name: pa.array(values, type=types[name]) for name, values in columns.items()})
