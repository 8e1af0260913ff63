"""Which interactions the judge grades: a processor turning ``interaction`` events into ``judge_request`` events.

::

    trigger = JudgeTrigger(TriggerConfig(sample_rate=0.1, runs=("grpo-*",), min_reward=0.0))
    requests = trigger.run(events)        # Event(payload=JudgeRequest(...)) for the chosen ones

Filters, all of which must pass: the run id matches one of ``runs`` (shell globs), the
interaction's ``success`` is ``success`` (None: either), its reward lies in
``min_reward..max_reward`` (an interaction without a reward passes only when both bounds are
None), and the completion is not empty.

Sampling is deterministic: an interaction is kept when the hash of its ``event_id`` (and
``seed``) falls below ``sample_rate``, so a replay, or another worker, picks the same ones. With
``whole_groups`` (the group judge) the hash is of its run and GRPO ``group_id`` instead, so a group
is sampled whole. The
request's event id is derived from the interaction's and its ``ts`` is the interaction's, so a
replayed request is the same row in ClickHouse (collapsed by ``FINAL``).

The reference answer is taken from the interaction's metadata, the first of ``reference_keys``
present and not empty; by default :data:`REFERENCE_KEYS`: ``reference``, ``correct_answer`` (seed
000's logs), ``answer``, ``solution``, ``ground_truth``, ``expected``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import uuid
from dataclasses import dataclass
from typing import Any

from trainwire.errors import ConfigError
from trainwire.events import Event, Interaction, JudgeRequest
from trainwire.processors.base import Processor

__all__ = ["REFERENCE_KEYS", "JudgeTrigger", "TriggerConfig", "request_event_id", "sampled"]

REFERENCE_KEYS = ("reference", "correct_answer", "answer", "solution", "ground_truth", "expected")
"""Where a reference answer is looked for, first present wins: in an interaction's metadata (the
trigger) and among a dataset's columns (the reward function). ``correct_answer`` is seed 000's
(``"metadata": {"correct_answer": "2.5", ...}``); it comes before the generic ``answer``, which
a log may also use for the model's own extracted answer."""
_REQUEST_NAMESPACE = uuid.UUID("0c6f3d2e-8a41-4b7e-b5d9-2e1f7a9c4d60")


@dataclass(frozen=True, slots=True)
class TriggerConfig:
    """What to send to the judge (see the module docstring)."""

    sample_rate: float = 1.0
    runs: tuple[str, ...] = ("*",)
    min_reward: float | None = None
    max_reward: float | None = None
    success: bool | None = True
    seed: str = ""
    reference_keys: tuple[str, ...] = REFERENCE_KEYS
    whole_groups: bool = False
    """Sample GRPO groups, not interactions (an interaction without a ``group_id`` is sampled alone)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ConfigError("judge.sample_rate", f"must be between 0 and 1, got {self.sample_rate}")
        if isinstance(self.runs, str):
            object.__setattr__(self, "runs", (self.runs,))
        if not self.runs:
            raise ConfigError("judge.runs", "needs at least one pattern ('*' for every run)")
        if self.min_reward is not None and self.max_reward is not None and self.min_reward > self.max_reward:
            raise ConfigError("judge.min_reward", f"{self.min_reward} is above max_reward {self.max_reward}")


def sampled(event_id: str, rate: float, seed: str = "") -> bool:
    """Whether ``event_id`` is in the deterministic sample of share ``rate``."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(f"{seed}\0{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


def request_event_id(interaction_event_id: str) -> str:
    """The id of the judge request made from an interaction (the same on every replay)."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, interaction_event_id))


class JudgeTrigger(Processor[Event]):
    """Turns the interactions that pass :class:`TriggerConfig` into ``judge_request`` events."""

    NAME = "judge_trigger"

    def __init__(self, config: TriggerConfig | None = None):
        self.config = config or TriggerConfig()
        self.seen = 0
        self.requested = 0
        self.skipped: dict[str, int] = {}

    def process(self, event: Event) -> list[Event]:
        """One ``judge_request`` event for a chosen interaction; nothing for anything else."""
        payload = event.payload
        if not isinstance(payload, Interaction):
            return []
        self.seen += 1
        reason = self._reject(event, payload)
        if reason is not None:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            return []
        self.requested += 1
        request = JudgeRequest(
            interaction_id=event.event_id,
            prompt=payload.prompt,
            completion=payload.completion,
            reference=self._reference(payload.metadata),
            step=payload.step,
            reward=payload.reward,
            rewards=dict(payload.rewards),
            metadata={k: v for k, v in {"model": payload.model, "group_id": payload.group_id}.items() if v is not None},
        )
        return [Event(run_id=event.run_id, payload=request, event_id=request_event_id(event.event_id), ts=event.ts)]

    def _reject(self, event: Event, payload: Interaction) -> str | None:
        c = self.config
        if not any(fnmatch.fnmatchcase(event.run_id, pattern) for pattern in c.runs):
            return "run"
        if c.success is not None and payload.success != c.success:
            return "success"
        if c.min_reward is not None or c.max_reward is not None:
            reward = payload.reward
            if reward is None or not math.isfinite(reward):
                return "reward"
            if (c.min_reward is not None and reward < c.min_reward) or (
                c.max_reward is not None and reward > c.max_reward
            ):
                return "reward"
        if not payload.completion.strip():
            return "empty"
        unit = event.event_id
        if c.whole_groups and payload.group_id is not None:
            unit = f"{event.run_id}\0{payload.group_id}"
        if not sampled(unit, c.sample_rate, c.seed):
            return "sample"
        return None

    def _reference(self, metadata: dict[str, Any]) -> str | None:
        for key in self.config.reference_keys:
            value = metadata.get(key)
            if value is not None and value != "":
                return value if isinstance(value, str) else str(value)
        return None

    def _state(self) -> dict[str, Any]:
        return {"seen": self.seen, "requested": self.requested, "skipped": dict(self.skipped)}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.requested = int(state["requested"])
        self.skipped = {str(k): int(v) for k, v in state["skipped"].items()}
