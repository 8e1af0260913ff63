"""When a GRPO group is complete: the judge worker's group collector for ``--mode group``.

A group judge grades all the completions of one GRPO group in one request, so the worker must
gather a group's ``judge_request`` events before it asks. Groups are identified as the stats
worker identifies them: by run and ``group_id`` (the trainer hook's ``"{step}:{prompt index}"``,
which the trigger copies into the request's ``metadata``); a request without a ``group_id`` is a
group of its own. Nothing in the events says how many completions a group has, so a group is
complete at the first of:

1. ``group_size`` requests of it have arrived (TRL's ``num_generations``; ``--group-size``);
2. a request of the same run at a later step arrives (a trainer emits its steps in order);
3. ``wait_s`` seconds passed since its last request arrived (``--group-wait``): a group the
   trigger's filters or sampling thinned out is judged with the completions it has;
4. the worker exits idle (``--until-idle``): the stream is over, every open group is judged as it is.

A worker stopped otherwise (Ctrl+C, SIGTERM) judges no open group: it leaves them uncommitted and
the next start reads them again, whole.

Until a group is complete its records are held: the worker commits its consumer's offsets only
up to the first record of an open group (:meth:`GroupCollector.held`), so a crash replays the open
groups (and the judge cache makes any group judged before the crash cost nothing again).

:class:`GroupCollector` is plain state, driven with records and a clock; the worker adapts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainwire.errors import ConfigError
from trainwire.events import Event, JudgeRequest

__all__ = ["GroupCollector", "Member"]

Member = tuple[Any, Event]
"""A request in a group: the bus record it came in (``topic``, ``partition``, ``offset``) and its event."""


@dataclass
class _OpenGroup:
    step: int | None
    last_seen: float
    members: dict[str, Member] = field(default_factory=dict)  # request event id -> member


class GroupCollector:
    """Gathers ``judge_request`` events into GRPO groups and says when each is complete (module docstring).

    Args:
        group_size: the completions per group (TRL's ``num_generations``); None when unknown.
        wait_s: how long a group waits for another completion before it is judged as it is.
    """

    def __init__(self, group_size: int | None = None, wait_s: float = 30.0):
        if group_size is not None and group_size < 1:
            raise ConfigError("judge.group_size", f"must be >= 1, got {group_size}")
        if not wait_s >= 0:
            raise ConfigError("judge.group_wait", f"must be >= 0 seconds, got {wait_s}")
        self.group_size = group_size
        self.wait_s = wait_s
        self._open: dict[tuple[str, str], _OpenGroup] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, record: Any, event: Event, now: float) -> list[list[Member]]:
        """Take one request; return the groups it completes (its own, and its run's groups of earlier steps)."""
        request = event.payload
        if not isinstance(request, JudgeRequest):
            raise TypeError(f"a group collects judge_request events, not {event.event_type}")
        group_id = request.metadata.get("group_id")
        key = (event.run_id, str(group_id) if group_id is not None else f"interaction:{request.interaction_id}")
        done = []
        if request.step is not None:  # a later step of the run completes its groups of earlier steps
            for other, group in list(self._open.items()):
                if other[0] == event.run_id and group.step is not None and group.step < request.step:
                    done.append(self._close(other))
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = _OpenGroup(step=request.step, last_seen=now)
        group.members.setdefault(event.event_id, (record, event))  # a request delivered twice counts once
        group.last_seen = now
        if group_id is None or (self.group_size is not None and len(group.members) >= self.group_size):
            done.append(self._close(key))
        return done

    def due(self, now: float) -> list[list[Member]]:
        """The groups that waited ``wait_s`` since their last request, now complete."""
        return [self._close(key) for key, group in list(self._open.items()) if now - group.last_seen >= self.wait_s]

    def has_due(self, now: float) -> bool:
        """Whether a group has waited ``wait_s`` since its last request (:meth:`due` would return it)."""
        return any(now - group.last_seen >= self.wait_s for group in self._open.values())

    def drain(self) -> list[list[Member]]:
        """Every open group, complete as it is (the stream is over: the worker exits idle, a rescore ends)."""
        return [self._close(key) for key in list(self._open)]

    def held(self) -> dict[tuple[str, int], int]:
        """Per ``(topic, partition)``, the offset of the first record of an open group: commit no further."""
        out: dict[tuple[str, int], int] = {}
        for group in self._open.values():
            for record, _ in group.members.values():
                where = (record.topic, record.partition)
                out[where] = min(out.get(where, record.offset), record.offset)
        return out

    def _close(self, key: tuple[str, str]) -> list[Member]:
        return list(self._open.pop(key).members.values())
