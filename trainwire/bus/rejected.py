"""The rejected files: JSON lines of the messages the bus refused for good, each with the reason.

A message the bus will never take (see :class:`~trainwire.bus.base.Refused`: over Kafka's
``max_request_size``, or refused by the broker for its size or the topic's ``max.message.bytes``)
is not retried, since it would be retried forever, but kept under ``{data_dir}/rejected/``:

- ``events.jsonl``: events from producers (the emitter), see :class:`RejectedEvents`;
- ``published.jsonl``: what the workers publish (stats, alerts, dead letters, through the
  :class:`~trainwire.bus.publisher.Publisher`), see :class:`RejectedMessages`. A separate file, as
  these are not always events: a dead letter carries any bytes the record had, and its headers.

Lines are appended under ``flock`` (several processes may share a file) and fsynced: the file
holds the only copy of these messages.
"""

from __future__ import annotations

import base64
import fcntl
import os
from pathlib import Path
from typing import Any

import orjson

from trainwire.bus.base import Refused
from trainwire.events import utc_now
from trainwire.private_files import open_private


def rejected_dir(data_dir: Path) -> Path:
    """The folder of the rejected files under ``data_dir``."""
    return Path(data_dir) / "rejected"


class RejectedFile:
    """A JSON-lines file of refused messages; subclasses say what a line holds besides the reason."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, refused: Refused) -> None:
        """Write one line for ``refused``: when, why, topic, size, then :meth:`fields`. Raises OSError."""
        message = refused.message
        line = orjson.dumps(
            {
                "rejected_at": utc_now(),
                "reason": refused.reason,
                "topic": message.topic,
                "size": len(message.value),
                **self.fields(refused),
            },
            option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE,
        )
        with open_private(self.path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def fields(self, refused: Refused) -> dict[str, Any]:
        """What the line holds of the message itself."""
        raise NotImplementedError


class RejectedEvents(RejectedFile):
    """``{data_dir}/rejected/events.jsonl``: the events the bus refused for good. One line per event::

    {"rejected_at": "2026-11-22T17:35:00.123456Z", "reason": "...", "topic": "trainwire.interactions",
     "size": 2097340, "event": {...the event as it was published...}}
    """

    def __init__(self, data_dir: Path):
        super().__init__(rejected_dir(data_dir) / "events.jsonl")

    def fields(self, refused: Refused) -> dict[str, Any]:
        return {"event": orjson.Fragment(refused.message.value)}  # as published (orjson, one line), byte for byte


class RejectedMessages(RejectedFile):
    """``{data_dir}/rejected/published.jsonl``: any messages the bus refused for good. One line per message::

    {"rejected_at": "2026-11-22T17:35:00.123456Z", "reason": "...", "topic": "trainwire.dead_letter",
     "size": 1048600, "key": "run-7", "headers": [{"name": "reason", "value": "invalid event: ..."}, ...],
     "value": {...}}

    The value is there as JSON, byte for byte, when it is a JSON document on one line (events:
    stats, alerts), else as ``value_base64``. The key and each header value are text when they are
    UTF-8, else ``key_base64`` / ``value_base64``; a message without a key has ``"key": null``.
    """

    def __init__(self, data_dir: Path):
        super().__init__(rejected_dir(data_dir) / "published.jsonl")

    def fields(self, refused: Refused) -> dict[str, Any]:
        message = refused.message
        out: dict[str, Any] = {"key": None} if message.key is None else _bytes_field("key", message.key)
        out["headers"] = [{"name": name, **_bytes_field("value", value)} for name, value in message.headers]
        if _is_one_line_json(message.value):
            out["value"] = orjson.Fragment(message.value)
        else:
            out["value_base64"] = base64.b64encode(message.value).decode()
        return out


def _bytes_field(name: str, data: bytes) -> dict[str, str]:
    """``{name: text}`` when ``data`` is UTF-8, else ``{name_base64: ...}``."""
    try:
        return {name: data.decode()}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode()}


def _is_one_line_json(data: bytes) -> bool:
    """Whether ``data`` can go into a JSON line as it is: one JSON document, no line break."""
    if b"\n" in data or b"\r" in data:
        return False
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True
