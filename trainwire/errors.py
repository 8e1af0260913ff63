"""The one exception tree of trainwire.

    TrainwireError                  root: catch this to catch everything trainwire raises
    ├── ConfigError                 a setting is missing or malformed (names the setting)
    ├── EventError                  an event could not be decoded or validated
    │                               (names the field and, when known, the file and line)
    ├── BusError                    the bus (Kafka or the embedded log) failed
    ├── StoreError                  ClickHouse (server or chdb) failed or refused a query
    └── MissingExtraError           an optional part was used without its extra installed

Foreign errors (aiokafka, clickhouse-connect, OSError) are translated at the module that talks
to them, with ``raise ... from exc`` so the original stays attached.
"""

from __future__ import annotations


class TrainwireError(Exception):
    """Root of every error trainwire raises on purpose."""


class ConfigError(TrainwireError):
    """A setting is missing or malformed."""

    def __init__(self, setting: str, problem: str):
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


class EventError(TrainwireError):
    """An event failed to decode or validate.

    ``field`` is a dotted path into the event (``payload.reward``); ``location`` is where the
    bytes came from (``logs.jsonl:17``, ``topic trainwire.interactions offset 42``) when known.
    """

    def __init__(self, field: str, problem: str, location: str | None = None):
        self.field = field
        self.problem = problem
        self.location = location
        where = f"{location}: " if location else ""
        super().__init__(f"{where}{field}: {problem}")

    def at(self, location: str) -> EventError:
        """The same error, placed at ``location`` (a file and line, a topic and offset)."""
        return EventError(self.field, self.problem, location)


class BusError(TrainwireError):
    """The bus failed: Kafka unreachable, the embedded log unreadable, a consumer group busy."""


class StoreError(TrainwireError):
    """ClickHouse failed or refused a statement.

    ``retriable`` is True when the failure is the connection's (server down, timeout), so the
    same statement may succeed later; False when ClickHouse refused the statement itself.
    """

    def __init__(self, message: str, *, retriable: bool = False):
        self.retriable = retriable
        super().__init__(message)


class MissingExtraError(TrainwireError, ImportError):
    """An optional part was imported without its extra."""

    def __init__(self, extra: str, module: str):
        self.extra = extra
        super().__init__(f"{module} needs the '{extra}' extra: pip install 'trainwire[{extra}]'")
