"""The training-data filter: which interactions become fine-tuning examples, and in which split.

After seed 001 (building fine-tuning data from LLM call logs). An interaction is kept when, in
this order (the first failing check is the reason it is dropped):

============================  =================================================================
reason                        dropped when
============================  =================================================================
``failed``                    ``success`` is false
``empty_prompt``              the prompt is blank (a chat prompt: no user message with content)
``empty_completion``          the completion is blank
``no_reward`` / ``low_reward``  ``min_reward`` is set and the reward is missing (or NaN) / below it
``too_short`` / ``too_long``  the completion has fewer than ``min_length`` / more than
                              ``max_length`` characters
``replacement_character``     the prompt or completion contains U+FFFD, the mark a decoder leaves
                              for bytes that are not valid UTF-8 (a tiny model's partial
                              characters): such text is never written into a dataset (checked
                              after the reward and length, so it counts the examples lost to it)
``no_judge_score`` /          ``min_judge_score`` is set and no successful judge score
``low_judge_score``           (``score_normalized``) came for the interaction / it is below
``duplicate``                 ``deduplicate`` is on and an earlier kept example had the same
                              ``dedup_field`` value (see below)
``limit``                     ``limit`` examples were kept already
============================  =================================================================

The dedup field (seed 001's ``--dedup-field``, ``prompt`` by default) may name any field of the
record:

- ``prompt``, ``completion`` (a call log's ``response.answer``) or ``prompt+completion``: the
  content fields;
- a scalar field of the interaction (:data:`INTERACTION_DEDUP_FIELDS`: ``model``, ``step``,
  ``group_id``, ``error``, ...);
- ``metadata.KEY``, a key of the interaction's metadata (``metadata.a.b`` goes into nested
  objects), e.g. ``metadata.task`` or, for imported seed-001 call logs,
  ``metadata.current_batch_content``.

Text values are compared stripped, other values as canonical JSON. An interaction without a
value for the field (missing, null or blank) cannot be a duplicate: it is kept, not remembered,
and counted (``DatasetFilter.no_dedup_value``). An unknown field name is a
:class:`ConfigError`.

Unlike the seed, duplicates are looked for among the examples that passed the other checks, so
a rejected record never hides a good one with the same prompt. Dedup remembers a 64-bit content
hash per kept example (collisions are negligible below billions of examples). The hashes are the
processor's grow-only keys, not part of its snapshot: the runtime saves each once
(:meth:`DatasetProcessor.take_new_keys`), so the state a checkpoint writes does not grow with the
data set, and hands them back on restart (:meth:`DatasetProcessor.load_keys`).

The split (``train``/``val``/``test`` for 3 ratios, ``train``/``val`` for 2) is decided by a
hash of the seed and the dedup-field content (the prompt when the dedup field is not a content
field): the same example lands in the same split on every replay and in every export with the
same seed, and copies of one prompt never straddle train and test, even with dedup off. In the
worker, which cannot know how many examples will come, split sizes follow the ratios
statistically, not exactly. ``trainwire export`` sees every example at once and cuts exactly
(:func:`split_sizes`): the examples ordered by the same hash, each split gets its ratio's share
rounded by largest remainder, and every split with a share > 0 gets at least one example when
there are as many examples as such splits (31 examples at 0.8,0.1,0.1: 25/3/3, where the hash
alone gave 30/0/1).

:class:`DatasetFilter` is the pure decision (used by the streaming processor and by ``trainwire
export``); :class:`DatasetProcessor` adapts it to a stream, where judge scores arrive after
their interactions: with ``min_judge_score`` set, interactions that pass the other checks wait
(up to ``max_pending``, oldest dropped first) for their score.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from trainwire.errors import ConfigError
from trainwire.events import Event, Interaction, JudgeScore, Kind, Prompt
from trainwire.processors.base import Processor

__all__ = [
    "DEDUP_FIELDS",
    "DROP_REASONS",
    "INTERACTION_DEDUP_FIELDS",
    "METADATA_PREFIX",
    "DatasetConfig",
    "DatasetFilter",
    "DatasetProcessor",
    "TrainingExample",
    "content_text",
    "dedup_field_problem",
    "parse_split_ratio",
    "split_sizes",
]

DEDUP_FIELDS = ("prompt", "completion", "prompt+completion")
"""The content dedup fields (the split follows them); see the module docstring for the others."""
INTERACTION_DEDUP_FIELDS = tuple(
    s.name
    for s in Interaction.FIELDS
    if s.kind in (Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL) and s.name not in DEDUP_FIELDS
)
"""The scalar fields of an interaction that may be the dedup field too (``model``, ``step``, ...)."""
METADATA_PREFIX = "metadata."
"""``metadata.KEY`` names a metadata key as the dedup field."""
DROP_REASONS = (
    "failed",
    "empty_prompt",
    "empty_completion",
    "no_reward",
    "low_reward",
    "too_short",
    "too_long",
    "replacement_character",
    "no_judge_score",
    "low_judge_score",
    "duplicate",
    "limit",
)
SPLIT_NAMES = ("train", "val", "test")
REPLACEMENT_CHARACTER = "\ufffd"
"""U+FFFD, what a decoder writes for bytes that are not valid UTF-8: text with it is not kept."""


def dedup_field_problem(name: str) -> str | None:
    """Why ``name`` cannot be a dedup field (None when it can): see the module docstring."""
    if name in DEDUP_FIELDS or name in INTERACTION_DEDUP_FIELDS:
        return None
    if name.startswith(METADATA_PREFIX):
        if all(name[len(METADATA_PREFIX) :].split(".")):
            return None
        return f"{name!r} is not a metadata key: write metadata.KEY (metadata.A.B for a nested key)"
    if name in ("answer", "response"):
        return f"{name!r} is not a field of an interaction: a call log's response answer is the completion"
    return (
        f"{name!r} is not a field of an interaction: use prompt, completion or prompt+completion, "
        f"an interaction field ({', '.join(INTERACTION_DEDUP_FIELDS)}), or metadata.KEY"
    )


def parse_split_ratio(text: str) -> tuple[float, ...]:
    """``"0.8,0.1,0.1"`` -> ``(0.8, 0.1, 0.1)``; raise :class:`ConfigError` naming ``split_ratio``."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError("split_ratio", f"{text!r} is not comma-separated numbers like 0.8,0.1,0.1") from None


def split_sizes(count: int, ratio: tuple[float, ...]) -> list[int]:
    """``count`` examples shared by ``ratio`` exactly: ``floor(count * share)`` each, the rest one
    at a time to the largest remainders (the earlier split on a tie); then a split with a share
    > 0 that got none takes one from the largest, as long as there are as many examples as such splits.
    """
    exact = [count * share for share in ratio]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(ratio)), key=lambda i: (sizes[i] - exact[i], i))
    for i in by_remainder[: count - sum(sizes)]:
        sizes[i] += 1
    wanted = [i for i, share in enumerate(ratio) if share > 0]
    if count >= len(wanted):
        for i in wanted:
            if sizes[i] == 0:
                sizes[max(range(len(sizes)), key=lambda j: sizes[j])] -= 1
                sizes[i] += 1
    return sizes


@dataclass(frozen=True, slots=True)
class DatasetConfig:
    """What makes an interaction a training example (see the module docstring).

    ``min_length``/``max_length`` count characters of the completion. ``dedup_field`` is a
    content field, an interaction field or ``metadata.KEY`` (see the module docstring).
    ``split_ratio`` has one to three shares summing to 1 (train, val, test); None writes a single
    file. ``seed`` salts the split hash (and orders ``trainwire export --shuffle``).
    """

    min_reward: float | None = None
    min_judge_score: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    deduplicate: bool = True
    dedup_field: str = "prompt"
    split_ratio: tuple[float, ...] | None = None
    limit: int | None = None
    seed: int = 42
    max_pending: int = 100_000

    def __post_init__(self) -> None:
        problem = dedup_field_problem(self.dedup_field)
        if problem is not None:
            raise ConfigError("dedup_field", problem)
        for name in ("min_length", "max_length", "limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(name, f"must be >= 0, got {value}")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ConfigError("min_length", f"{self.min_length} is greater than max_length {self.max_length}")
        for name in ("min_reward", "min_judge_score"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(name, f"must be a finite number, got {value}")
        if self.split_ratio is not None:
            ratio = self.split_ratio
            if not 1 <= len(ratio) <= 3:
                raise ConfigError("split_ratio", f"needs 1 to 3 shares (train, val, test), got {len(ratio)}")
            if any(not (math.isfinite(r) and r >= 0) for r in ratio) or abs(math.fsum(ratio) - 1) > 1e-6:
                raise ConfigError("split_ratio", f"shares must be >= 0 and sum to 1, got {','.join(map(str, ratio))}")
        if self.max_pending < 0:
            raise ConfigError("max_pending", f"must be >= 0, got {self.max_pending}")

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names (empty without ``split_ratio``)."""
        return SPLIT_NAMES[: len(self.split_ratio)] if self.split_ratio else ()


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One kept interaction, ready for a format writer.

    ``key`` is the 64-bit content hash (hex) of the dedup field's value ('' when the interaction
    has none); ``source_id`` the interaction's event id (what a sink uses to write each example
    once); ``split`` is None without splits.
    """

    prompt: Prompt
    completion: str
    split: str | None
    key: str
    source_id: str
    run_id: str
    reward: float | None = None
    judge_score: float | None = None


def content_text(content: Any) -> str:
    """A chat message's content as text (multi-part content: its text parts joined by spaces)."""
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _prompt_blank(prompt: Prompt) -> bool:
    if isinstance(prompt, str):
        return not prompt.strip()
    return not any(m.get("role") == "user" and content_text(m.get("content")).strip() for m in prompt)


def _prompt_key(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt.strip()
    messages = [[m.get("role"), content_text(m.get("content")).strip()] for m in prompt]
    return orjson.dumps(messages).decode()


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _value_text(value: Any) -> str | None:
    """A dedup value as text: strings stripped, anything else canonical JSON; None when blank or null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class DatasetFilter:
    """The keep/drop decision with its memory (seen hashes, counts); pure, no I/O.

    :meth:`check` returns a :class:`TrainingExample` or the drop reason, and counts it.
    ``no_dedup_value`` counts the examples kept without dedup, having no value for the dedup field.
    ``seen`` holds the dedup keys, and ``new_keys`` those added since the caller last emptied it
    (the keys are not in :meth:`to_dict`).
    """

    def __init__(self, config: DatasetConfig):
        self.config = config
        self.seen: set[str] = set()
        self.new_keys: list[str] = []
        self.kept = 0
        self.no_dedup_value = 0
        self.dropped: Counter[str] = Counter()
        self.per_split: Counter[str] = Counter()

    def dedup_text(self, interaction: Interaction) -> str | None:
        """The dedup field's value, normalized (stripped; chat prompts as role/content JSON); None if it has none."""
        field = self.config.dedup_field
        if field == "prompt":
            return _prompt_key(interaction.prompt)
        if field == "completion":
            return interaction.completion.strip()
        if field == "prompt+completion":
            return _prompt_key(interaction.prompt) + "\x00" + interaction.completion.strip()
        if not field.startswith(METADATA_PREFIX):
            return _value_text(getattr(interaction, field))
        value: Any = interaction.metadata
        for part in field[len(METADATA_PREFIX) :].split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return _value_text(value)

    def split_key(self, key: str, prompt: Prompt) -> str:
        """What the split hangs on: the dedup key ``key`` for a content dedup field, else the prompt's hash."""
        return key if self.config.dedup_field in DEDUP_FIELDS else _hash(_prompt_key(prompt))

    def split_point(self, split_key: str) -> float:
        """Where the example with ``split_key`` falls in [0, 1): a hash salted with the seed."""
        digest = hashlib.blake2b(f"{self.config.seed}\x00{split_key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def split_of(self, split_key: str) -> str | None:
        """The split of an example with ``split_key`` (stable for a given seed)."""
        ratio = self.config.split_ratio
        if not ratio:
            return None
        u = self.split_point(split_key)
        cumulative = 0.0
        for name, share in zip(SPLIT_NAMES, ratio, strict=False):
            cumulative += share
            if u < cumulative:
                return name
        return SPLIT_NAMES[len(ratio) - 1]

    def precheck(self, interaction: Interaction) -> str | None:
        """The reason to drop ``interaction`` on everything but the judge score, dedup and limit; None to go on."""
        c = self.config
        if not interaction.success:
            return "failed"
        if _prompt_blank(interaction.prompt):
            return "empty_prompt"
        if not interaction.completion.strip():
            return "empty_completion"
        if c.min_reward is not None:
            reward = interaction.reward
            if reward is None or math.isnan(reward):
                return "no_reward"
            if reward < c.min_reward:
                return "low_reward"
        length = len(interaction.completion)
        if c.min_length is not None and length < c.min_length:
            return "too_short"
        if c.max_length is not None and length > c.max_length:
            return "too_long"
        if REPLACEMENT_CHARACTER in interaction.completion or REPLACEMENT_CHARACTER in _prompt_key(interaction.prompt):
            return "replacement_character"
        return None

    def check(
        self, interaction: Interaction, judge_score: float | None = None, *, source_id: str = "", run_id: str = ""
    ) -> TrainingExample | str:
        """Decide on one interaction (with its judge score, if any) and count the outcome."""
        reason = self.precheck(interaction)
        if reason is None:
            return self.finish(interaction, judge_score, source_id=source_id, run_id=run_id)
        self.dropped[reason] += 1
        return reason

    def finish(
        self, interaction: Interaction, judge_score: float | None, *, source_id: str = "", run_id: str = ""
    ) -> TrainingExample | str:
        """The judge, dedup and limit checks for an interaction that passed :meth:`precheck`; counts the outcome."""
        c = self.config
        reason: str | None = None
        if c.min_judge_score is not None:
            if judge_score is None or math.isnan(judge_score):
                reason = "no_judge_score"
            elif judge_score < c.min_judge_score:
                reason = "low_judge_score"
        text = self.dedup_text(interaction)
        key = "" if text is None else _hash(text)
        if reason is None and c.deduplicate and key in self.seen:
            reason = "duplicate"
        if reason is None and c.limit is not None and self.kept >= c.limit:
            reason = "limit"
        if reason is not None:
            self.dropped[reason] += 1
            return reason
        if c.deduplicate and key:
            self.seen.add(key)
            self.new_keys.append(key)
        elif c.deduplicate:
            self.no_dedup_value += 1
        self.kept += 1
        split = self.split_of(self.split_key(key, interaction.prompt))
        self.per_split[split or "all"] += 1
        return TrainingExample(
            prompt=interaction.prompt,
            completion=interaction.completion,
            split=split,
            key=key,
            source_id=source_id,
            run_id=run_id,
            reward=interaction.reward,
            judge_score=judge_score,
        )

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` examples dropped for ``reason`` outside :meth:`check` (a limit applied later)."""
        self.dropped[reason] += count

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state, without the dedup keys (``seen``)."""
        return {
            "kept": self.kept,
            "no_dedup_value": self.no_dedup_value,
            "dropped": dict(self.dropped),
            "per_split": dict(self.per_split),
        }

    def load_dict(self, data: dict[str, Any]) -> None:
        """Replace the state with :meth:`to_dict` output (the dedup keys are added apart, to ``seen``).

        A snapshot of an older version holds the keys: they become ``new_keys``, to be saved apart.
        """
        self.new_keys = [str(k) for k in data.get("seen", ())]
        self.seen = set(self.new_keys)
        self.kept = int(data["kept"])
        self.no_dedup_value = int(data.get("no_dedup_value", 0))  # absent from snapshots of older versions
        self.dropped = Counter({str(k): int(v) for k, v in data["dropped"].items()})
        self.per_split = Counter({str(k): int(v) for k, v in data["per_split"].items()})


class DatasetProcessor(Processor[TrainingExample]):
    """The filter over a stream of ``interaction`` (and ``judge_score``) events; outputs training examples.

    Feed the outputs to :class:`~trainwire.sinks.dataset.DatasetSink`. Judge scores are matched
    to interactions by ``interaction_id`` (the interaction's event id), in either order.
    """

    NAME = "dataset"

    def __init__(self, config: DatasetConfig | None = None):
        self.config = config or DatasetConfig()
        self.filter = DatasetFilter(self.config)
        # interactions waiting for a judge score: event_id -> [run_id, payload json]
        self._pending: dict[str, list[Any]] = {}
        self._scores: dict[str, float] = {}  # judge scores whose interaction has not come yet

    def process(self, event: Event) -> list[TrainingExample]:
        """Take one event; return the examples it completes (zero or more)."""
        payload = event.payload
        if isinstance(payload, Interaction):
            return self._interaction(event, payload)
        if isinstance(payload, JudgeScore):
            return self._judge(payload)
        return []

    def _interaction(self, event: Event, payload: Interaction) -> list[TrainingExample]:
        if self.config.min_judge_score is None:
            out = self.filter.check(payload, source_id=event.event_id, run_id=event.run_id)
            return [out] if isinstance(out, TrainingExample) else []
        reason = self.filter.precheck(payload)
        if reason is not None:
            self.filter.drop(reason)
            return []
        if event.event_id in self._scores:
            score = self._scores.pop(event.event_id)
            out = self.filter.finish(payload, score, source_id=event.event_id, run_id=event.run_id)
            return [out] if isinstance(out, TrainingExample) else []
        self._pending[event.event_id] = [event.run_id, payload.to_json_dict()]
        while len(self._pending) > self.config.max_pending:
            del self._pending[next(iter(self._pending))]
            self.filter.drop("no_judge_score")
        return []

    def _judge(self, payload: JudgeScore) -> list[TrainingExample]:
        if self.config.min_judge_score is None or not payload.success or payload.score_normalized is None:
            return []
        pending = self._pending.pop(payload.interaction_id, None)
        if pending is None:
            self._scores.pop(payload.interaction_id, None)
            self._scores[payload.interaction_id] = payload.score_normalized
            while len(self._scores) > self.config.max_pending:
                del self._scores[next(iter(self._scores))]
            return []
        run_id, data = pending
        interaction = Interaction.from_json_dict(data)
        out = self.filter.finish(interaction, payload.score_normalized, source_id=payload.interaction_id, run_id=run_id)
        return [out] if isinstance(out, TrainingExample) else []

    def flush(self) -> list[TrainingExample]:
        """End of input: interactions still waiting for a judge score are dropped as ``no_judge_score``."""
        if self._pending:
            self.filter.drop("no_judge_score", len(self._pending))
            self._pending.clear()
        return []

    def take_new_keys(self) -> list[str]:
        """The dedup keys added since the last call."""
        keys, self.filter.new_keys = self.filter.new_keys, []
        return keys

    def load_keys(self, keys: Iterable[str]) -> None:
        """Add saved dedup keys (after :meth:`restore`)."""
        self.filter.seen.update(keys)

    def _state(self) -> dict[str, Any]:
        return {
            "filter": self.filter.to_dict(),
            "pending": [[event_id, run_id, data] for event_id, (run_id, data) in self._pending.items()],
            "scores": [[k, v] for k, v in self._scores.items()],
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        flt = DatasetFilter(self.config)
        flt.load_dict(state["filter"])
        pending = {str(event_id): [str(run_id), dict(data)] for event_id, run_id, data in state["pending"]}
        self.filter, self._pending = flt, pending
        self._scores = {str(k): float(v) for k, v in state["scores"]}
