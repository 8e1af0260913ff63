"""The processor interface: plain-Python stream logic that a runtime drives one event at a time.

A processor knows nothing about Kafka, the embedded log or ClickHouse. A runtime (a faust agent,
the embedded runner, a batch replay, a unit test) feeds it events and routes what comes out::

    processor = RewardStatsProcessor(StatsConfig(step_window=10))
    for event in events:
        for output in processor.process(event):
            sink.add(output)
    state = processor.snapshot()          # at a checkpoint: JSON-able, store it with the offsets
    ...
    processor = RewardStatsProcessor(StatsConfig(step_window=10))
    processor.restore(state)              # after a restart: carry on where the checkpoint was

The verbs:

- :meth:`Processor.process` takes one event and returns the outputs it completes (possibly none);
  events a processor does not handle are ignored (an empty list).
- :meth:`Processor.flush` is the end of the input (a finite replay, a test, a batch export): it
  emits what is still open (the last window, the last step). A runtime that is merely stopping
  does *not* flush; it snapshots, so the open windows continue after the restart.
- :meth:`Processor.snapshot` / :meth:`Processor.restore`: the whole state as a JSON-able dict
  (strings, numbers, lists, dicts; finite floats only), versioned by ``STATE_VERSION``.
- :meth:`Processor.take_new_keys` / :meth:`Processor.load_keys`: state that only grows, such as
  the dataset filter's dedup keys, stays out of the snapshot, which would otherwise grow with the
  data set and be written whole at every checkpoint. The runtime saves each key once, as it is
  added, and hands the saved keys back after ``restore``.
- :meth:`Processor.run` drives a list of events through ``process`` and ``flush``: what a test or
  a batch job does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar, Generic, TypeVar

from trainwire.errors import TrainwireError
from trainwire.events import Event

__all__ = ["Processor", "StateError"]

OutT = TypeVar("OutT")


class StateError(TrainwireError):
    """A processor snapshot could not be restored (wrong processor, wrong version, malformed field)."""

    def __init__(self, processor: str, problem: str):
        self.processor = processor
        self.problem = problem
        super().__init__(f"{processor} state: {problem}")


class Processor(ABC, Generic[OutT]):
    """Base of the stream processors: ``process`` one event, ``flush`` at the end, ``snapshot``/``restore``."""

    NAME: ClassVar[str]
    """A short stable name; snapshots carry it so one processor's state is never fed to another."""
    STATE_VERSION: ClassVar[int] = 1
    """Version of the snapshot layout; bumped when it changes incompatibly."""

    @abstractmethod
    def process(self, event: Event) -> list[OutT]:
        """Take one event; return the outputs it completes (often none)."""

    def flush(self) -> list[OutT]:
        """End of input: emit whatever is still open. The default has nothing open."""
        return []

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """The processor's state as a JSON-able dict (without the envelope ``snapshot`` adds)."""

    @abstractmethod
    def _load_state(self, state: dict[str, Any]) -> None:
        """Replace the processor's state with ``state`` (as produced by ``_state``)."""

    def snapshot(self) -> dict[str, Any]:
        """The whole state, JSON-able, tagged with the processor name and state version."""
        return {"processor": self.NAME, "version": self.STATE_VERSION, "state": self._state()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Load a snapshot taken by :meth:`snapshot` of the same processor; raise :class:`StateError` if it is not."""
        if not isinstance(snapshot, dict):
            raise StateError(self.NAME, f"expected a dict, got {type(snapshot).__name__}")
        if snapshot.get("processor") != self.NAME:
            raise StateError(self.NAME, f"snapshot is of processor {snapshot.get('processor')!r}")
        if snapshot.get("version") != self.STATE_VERSION:
            raise StateError(
                self.NAME, f"snapshot version {snapshot.get('version')!r} (this code reads {self.STATE_VERSION})"
            )
        state = snapshot.get("state")
        if not isinstance(state, dict):
            raise StateError(self.NAME, "field 'state' is missing or not an object")
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StateError(self.NAME, f"malformed snapshot: {type(exc).__name__}: {exc}") from exc

    def take_new_keys(self) -> list[str]:
        """The keys added to the processor's grow-only state since the last call (the default keeps none)."""
        return []

    def load_keys(self, keys: Iterable[str]) -> None:
        """Add keys saved from :meth:`take_new_keys` back to the grow-only state, after :meth:`restore`."""
        raise StateError(self.NAME, "this processor keeps no keys")

    def run(self, events: Iterable[Event], flush: bool = True) -> list[OutT]:
        """Process ``events`` in order (then flush, unless ``flush=False``); all outputs in order."""
        outputs: list[OutT] = []
        for event in events:
            outputs.extend(self.process(event))
        if flush:
            outputs.extend(self.flush())
        return outputs
